"""``python -m g2s_localization ARGS`` is ``g2s ARGS``; torchrun needs a module to start, e.g.
``torchrun --nproc_per_node 2 -m g2s_localization train --config config/train_weak.yaml``."""
import sys

from g2s_localization.cli import main

sys.exit(main())
