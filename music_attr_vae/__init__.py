"""music-attr-vae: attribute-regularised measure VAE for folk melodies (Pati & Lerch 2019)."""

import warnings

# note_seq imports pydub, which warns about a missing ffmpeg we never use.
warnings.filterwarnings("ignore", message="Couldn't find ffmpeg or avconv")

__version__ = "0.11.0"
