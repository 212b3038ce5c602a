"""mlplatform: raw heterogeneous data → a live, versioned, traffic-split HTTP endpoint, on Ray and MLflow.

Importing the package has no side effects: no Ray, no MLflow, no files touched. The layers, from the top
(each imports only those below it; `make lint` checks it): cli → launch | tools → pipeline → monitor →
release → serve → train → registry | data → cluster → config → settings → errors.
"""

from mlplatform.config import load_config
from mlplatform.errors import ConfigError, PlatformError

__version__ = "0.1.0"
__all__ = ["load_config", "ConfigError", "PlatformError", "__version__"]
