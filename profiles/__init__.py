"""IPython profiles shipped with the package (`deepspm-bluesky ipython` installs and starts one)."""
