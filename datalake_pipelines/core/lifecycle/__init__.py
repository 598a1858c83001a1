"""The lake's lifecycle: deleting rows (``delete.py``), retained catalog files (``retained.py``), what the
catalog references (``refs.py``), garbage collection of unreferenced assets (``gc.py``), time travel
(``as_of.py``) and catalog versions (``versions.py``). No Dagster here."""
