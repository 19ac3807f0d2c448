"""`python -m keras_taskrobust`: the command-line main job."""

import sys

from keras_taskrobust.cli import main

sys.exit(main())
