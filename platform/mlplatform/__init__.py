"""mlplatform: raw heterogeneous data → a live, versioned, traffic-split HTTP endpoint, on Ray and MLflow.

Importing the package has no side effects: no Ray, no MLflow, no files touched.
"""

from mlplatform.config import PipelineConfig, load_config
from mlplatform.errors import ConfigError, PlatformError

__version__ = "0.1.0"
__all__ = ["PipelineConfig", "load_config", "ConfigError", "PlatformError", "__version__"]
