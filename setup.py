"""music-attr-vae: latent space regularization for explicit control of musical attributes."""

from setuptools import find_packages, setup

setup(
    name="music-attr-vae",
    version="0.11.0",
    description=(
        "A hierarchical measure VAE whose latent dimensions are regularised to "
        "follow musical attributes (Pati & Lerch 2019), in TensorFlow/Keras."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["music_attr_vae", "music_attr_vae.*"]),
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.3",
        "note-seq>=0.0.5",
        "tensorflow-datasets>=4.9",
        "numpy>=1.26",
        "matplotlib>=3.8",
        "absl-py>=2.0",
        "tensorboard>=2.16",
        "ml_collections>=0.1.1",
        "tqdm>=4.60",
        "scikit-learn>=1.3",
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6", "music21>=9", "nbclient>=0.10", "nbformat>=5.9", "ipykernel>=6", "ipywidgets>=8"],
        "colab": ["ipywidgets>=8"],
    },
    entry_points={"console_scripts": ["music-attr-vae=music_attr_vae.cli:main"]},
)
