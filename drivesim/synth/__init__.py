"""The synthetic driving world: procedural maps and traffic, a camera renderer, a nuScenes-format
writer, and exact re-simulation of any scene under edits."""
