"""Put the repository's `platform/` source root on sys.path when mlplatform is not installed.

`ray job submit --working-dir .` uploads the repository but does not install it. The driver finds the
package through this path entry; Ray tasks and actors get it because `mlplatform.launch` then ships the
package with the runtime_env's `py_modules`.
"""

import os
import sys

INSERTED = False
try:
    import mlplatform  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "platform"))
    INSERTED = True
