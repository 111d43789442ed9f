"""`python -m clay_assets.cli`: the same command line as `clay-assets`."""
from clay_assets.cli import main
import sys
sys.exit(main())
