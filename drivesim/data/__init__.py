"""nuScenes-format logs -> typed pytrees (`Log`), BEV occupancy, and training-clip caches."""
