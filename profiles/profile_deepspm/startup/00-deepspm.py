"""IPython startup of the deepspm profile: RE writing to Tiled, catalog, stm, the plans.

After this, ``RE(autonomous_survey())`` surveys the STM and ``catalog[-1]`` is the last run;
``RE(autonomous_survey(state_dir="~/survey1"))`` keeps what is needed to resume there.
The catalog is $DEEPSPM_CATALOG (a folder, or a served Tiled URI with $DEEPSPM_API_KEY) or
the per-user default; the STM is simulated unless $DEEPSPM_BACKEND is ``labview`` or
``nanonis`` (then $DEEPSPM_HOST and $DEEPSPM_PORT). What is set up lives in
`deepspm_bluesky.profiles.ipython.populate`; add your own lines below.
"""

from deepspm_bluesky.profiles.ipython import populate

populate(globals())
