"""Class vocabularies shared by the loader, the occupancy rasteriser and the synthetic world.

Two vocabularies:
- agent classes: the coarse category of a tracked object (what a planner needs to know);
- occupancy classes: the semantic label of a BEV cell (map layers below, agents on top).
"""

from __future__ import annotations

# Agent classes (int ids stored in `AgentTracks.category`).
VEHICLE = 0
PEDESTRIAN = 1
CYCLIST = 2
OBSTACLE = 3
AGENT_CLASS_NAMES = ("vehicle", "pedestrian", "cyclist", "obstacle")

# Occupancy classes (uint8 ids stored in `Occupancy.grid`). Map classes come first; agents are
# painted over the map. Order of the map classes is also their paint priority (later wins).
OCC_FREE = 0
OCC_DRIVABLE = 1
OCC_WALKWAY = 2
OCC_CROSSING = 3
OCC_LANE_MARKING = 4
OCC_VEHICLE = 5
OCC_PEDESTRIAN = 6
OCC_CYCLIST = 7
OCC_OBSTACLE = 8
OCC_CLASS_NAMES = (
    "free",
    "drivable",
    "walkway",
    "crossing",
    "lane_marking",
    "vehicle",
    "pedestrian",
    "cyclist",
    "obstacle",
)
NUM_OCC_CLASSES = len(OCC_CLASS_NAMES)
# Occupancy class of each agent class, indexed by agent class id.
AGENT_TO_OCC = (OCC_VEHICLE, OCC_PEDESTRIAN, OCC_CYCLIST, OCC_OBSTACLE)
# RGB colours for figures, indexed by occupancy class id.
OCC_COLORS = (
    (250, 250, 250),  # free
    (190, 190, 196),  # drivable
    (150, 200, 150),  # walkway
    (240, 220, 120),  # crossing
    (255, 255, 255),  # lane marking
    (40, 90, 220),  # vehicle
    (230, 40, 40),  # pedestrian
    (250, 140, 20),  # cyclist
    (120, 60, 160),  # obstacle
)

# The nuScenes v1.0 general categories (23 classes), with their coarse agent class.
NUSCENES_CATEGORIES: dict[str, int] = {
    "animal": OBSTACLE,
    "human.pedestrian.adult": PEDESTRIAN,
    "human.pedestrian.child": PEDESTRIAN,
    "human.pedestrian.construction_worker": PEDESTRIAN,
    "human.pedestrian.personal_mobility": PEDESTRIAN,
    "human.pedestrian.police_officer": PEDESTRIAN,
    "human.pedestrian.stroller": PEDESTRIAN,
    "human.pedestrian.wheelchair": PEDESTRIAN,
    "movable_object.barrier": OBSTACLE,
    "movable_object.debris": OBSTACLE,
    "movable_object.pushable_pullable": OBSTACLE,
    "movable_object.trafficcone": OBSTACLE,
    "static_object.bicycle_rack": OBSTACLE,
    "vehicle.bicycle": CYCLIST,
    "vehicle.bus.bendy": VEHICLE,
    "vehicle.bus.rigid": VEHICLE,
    "vehicle.car": VEHICLE,
    "vehicle.construction": VEHICLE,
    "vehicle.emergency.ambulance": VEHICLE,
    "vehicle.emergency.police": VEHICLE,
    "vehicle.motorcycle": CYCLIST,
    "vehicle.trailer": VEHICLE,
    "vehicle.truck": VEHICLE,
}

NUSCENES_ATTRIBUTES = (
    "cycle.with_rider",
    "cycle.without_rider",
    "pedestrian.moving",
    "pedestrian.sitting_lying_down",
    "pedestrian.standing",
    "vehicle.moving",
    "vehicle.parked",
    "vehicle.stopped",
)


def agent_class_of(category_name: str) -> int:
    """Coarse agent class of a nuScenes category name (unknown names count as obstacles).

    Real data may carry categories beyond the 23 general ones (e.g. lidarseg's `flat.*`, which
    never has boxes); they are treated as obstacles rather than rejected.
    """
    if category_name in NUSCENES_CATEGORIES:
        return NUSCENES_CATEGORIES[category_name]
    for prefix, cls in (("vehicle.", VEHICLE), ("human.", PEDESTRIAN)):
        if category_name.startswith(prefix):
            return cls
    return OBSTACLE


DEFAULT_SIZES = {
    "vehicle.car": (4.5, 1.85, 1.55),
    "vehicle.truck": (7.5, 2.4, 3.1),
    "vehicle.bus.rigid": (11.0, 2.55, 3.3),
    "vehicle.bicycle": (1.75, 0.6, 1.7),
    "vehicle.motorcycle": (2.1, 0.8, 1.5),
    "human.pedestrian.adult": (0.7, 0.65, 1.75),
    "human.pedestrian.child": (0.5, 0.5, 1.2),
    "movable_object.trafficcone": (0.4, 0.4, 0.75),
    "movable_object.barrier": (2.2, 0.6, 1.0),
}
"""Box size (length, width, height, m) an agent of each nuScenes category gets when it is inserted
without one (counterfactual edits, the synthetic world)."""
