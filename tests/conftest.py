"""Shared test set-up: TensorFlow's legacy Keras before any import, quiet logs."""

from edgecompress._env import configure_environment

configure_environment()
