"""What runs inside the guests of the base images this project builds: standard library only
(an import-linter contract keeps it so), because it runs on the image's Python with nothing
else installed. ``context``: the contextualization service, ``stratus-context``."""
