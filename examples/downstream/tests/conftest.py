from __future__ import annotations

import sys
from pathlib import Path

# The project's own modules (a real project would install itself instead).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
