"""Kedro project settings: the defaults, with the catalog's custom datasets importable."""

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
