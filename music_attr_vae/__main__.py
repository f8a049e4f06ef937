import sys

from music_attr_vae.cli import main

sys.exit(main())
