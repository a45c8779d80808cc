"""Camera images of the synthetic world: a flat textured ground, boxes for cars, people and
buildings, a sky, sun shading and distance fog.

One ray per pixel centre. Cameras are level (no pitch or roll, as in `drivesim.synth.rig`), so
all pixels of an image column share one horizontal ray direction and each image row one vertical
slope: the expensive part of a ray-box test (the 2-D slab test of the box footprint) is done once
per column and box, and each pixel only intersects that footprint interval with the box's height
interval. The ray of pixel (u, v) is `p + t * (h(u), dz(v))`, where `h(u)` is the horizontal part
of the pinhole direction (unit forward plus lateral offset) and `dz(v)` its vertical slope; all
depths are compared in this `t` (the same along one ray) and turned into metres only for fog.

Pixel centres sit at (column + 0.5, row + 0.5) in the intrinsics' pixel coordinates, matching
intrinsics that are scaled from 1600x900 by plain multiplication (`rig.nuscenes_rig`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

_NEAR = 0.05  # m: ignore hits closer than this (a camera inside a box does not see it)
_FACE_COLUMNS = 11  # columns of `_face_table`


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """Look and batching of the camera renderer."""

    fog_distance: float = 150.0
    """Fog scale (m): a surface at distance d keeps exp(-d / fog_distance) of its own colour."""
    sky_horizon: tuple[float, float, float] = (0.80, 0.85, 0.90)
    """Sky colour (RGB in [0, 1]) at the horizon; also the fog colour."""
    sky_zenith: tuple[float, float, float] = (0.33, 0.52, 0.80)
    """Sky colour high above the horizon."""
    sky_falloff: float = 0.45
    """Slope (tan of the elevation angle) at which the sky reaches its zenith colour."""
    sun_direction: tuple[float, float, float] = (0.55, -0.45, 0.70)
    """Direction towards the sun in the global frame (normalised internally)."""
    ambient: float = 0.45
    """Light a box face gets from the sky whatever its orientation."""
    diffuse: float = 0.65
    """Strength of the sunlight on a face that looks straight at the sun."""
    ground_noise: float = 0.07
    """Amplitude of the per-texel brightness noise on the ground (fraction of the colour)."""
    ground_patch_noise: float = 0.05
    """Amplitude of a coarser (1.6 m) brightness noise that breaks up large flat areas."""
    noise_fade: float = 25.0
    """Distance (m) over which the ground noise fades out, so far ground does not sparkle."""
    max_boxes: int = 32
    """Boxes per image (K) that `select_boxes` keeps by default; `render_images` takes any K."""
    chunk_size: int = 8
    """Images per compiled call (vmapped together); `render_images` loops over chunks on the host.
    Small chunks keep the per-pixel working set in the CPU caches: on a 2-core CPU at 160x90, 8
    renders ~2x faster per image than 32 or 64."""


# ---------------------------------------------------------------------------------------------
# The per-image kernel.


def _safe_inverse(x: jnp.ndarray) -> jnp.ndarray:
    """1 / x with x near zero replaced by a tiny number of the same sign (slab tests stay finite)."""
    tiny = jnp.float32(1e-9)
    return 1.0 / jnp.where(jnp.abs(x) < tiny, jnp.where(x < 0, -tiny, tiny), x)


def _texel_noise(row: jnp.ndarray, col: jnp.ndarray) -> jnp.ndarray:
    """Deterministic noise in [-0.5, 0.5] per integer cell (an integer hash, no randomness)."""
    h = row.astype(jnp.uint32) * jnp.uint32(73856093) ^ col.astype(jnp.uint32) * jnp.uint32(19349663)
    h = h * jnp.uint32(0x9E3779B1)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    return (h & jnp.uint32(1023)).astype(jnp.float32) / 1023.0 - 0.5


def _column_slabs(p_xy, h_w2, boxes_k7, valid_k):
    """2-D slab test of every box footprint against every column's horizontal ray.

    Args:
      p_xy: (2,) camera position.
      h_w2: (W, 2) horizontal ray direction per column.
      boxes_k7: (K, 7) boxes; valid_k: (K,) bool.

    Returns:
      t0, t1: (W, K) ray parameter where the ray enters / leaves the footprint (t0 = inf: missed).
      face: (W, K) int32 side face the ray enters through: 0 / 1 the box's +x / -x end, 2 / 3 its
        +y / -y side.
    """
    x, y, yaw = boxes_k7[:, 0], boxes_k7[:, 1], boxes_k7[:, 3]
    half_l, half_w = 0.5 * boxes_k7[:, 4], 0.5 * boxes_k7[:, 5]
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    rx, ry = p_xy[0] - x, p_xy[1] - y
    px = c * rx + s * ry  # camera in each box's frame, (K,)
    py = -s * rx + c * ry
    hx = c[None, :] * h_w2[:, :1] + s[None, :] * h_w2[:, 1:]  # ray direction in box frames, (W, K)
    hy = -s[None, :] * h_w2[:, :1] + c[None, :] * h_w2[:, 1:]
    ix, iy = _safe_inverse(hx), _safe_inverse(hy)
    ax, bx = (-half_l - px) * ix, (half_l - px) * ix
    ay, by = (-half_w - py) * iy, (half_w - py) * iy
    tx0, tx1 = jnp.minimum(ax, bx), jnp.maximum(ax, bx)
    ty0, ty1 = jnp.minimum(ay, by), jnp.maximum(ay, by)
    t0, t1 = jnp.maximum(tx0, ty0), jnp.minimum(tx1, ty1)
    hit = valid_k[None, :] & (t0 <= t1) & (t1 > _NEAR)
    # The entry face: an end face if the x slab is entered last; the ray moving towards -x enters +x.
    face = jnp.where(tx0 > ty0, jnp.where(hx < 0, 0, 1), jnp.where(hy < 0, 2, 3)).astype(jnp.int32)
    return jnp.where(hit, t0, jnp.inf), t1, face


def _face_table(boxes_k7, color_k3, style_k, sun, cfg: RenderConfig) -> jnp.ndarray:
    """(K * 6, 11) per box face (+x, -x, +y, -y ends and sides, top, bottom): sunlit colour (3),
    the horizontal axis along the face and offset giving metres from its edge (3), face length,
    bottom and top height, style, and 1 for side faces / 0 for top and bottom."""
    x, y, yaw = boxes_k7[:, 0], boxes_k7[:, 1], boxes_k7[:, 3]
    half_l, half_w = 0.5 * boxes_k7[:, 4], 0.5 * boxes_k7[:, 5]
    z_lo = boxes_k7[:, 2] - 0.5 * boxes_k7[:, 6]
    z_hi = boxes_k7[:, 2] + 0.5 * boxes_k7[:, 6]
    c, s = jnp.cos(yaw), jnp.sin(yaw)
    zero, one = jnp.zeros_like(c), jnp.ones_like(c)
    # Normals (K, 6, 3), and per face the axis along it: ends run along the box y axis, sides along x.
    normals = jnp.stack(
        [
            jnp.stack(v, -1)
            for v in [(c, s, zero), (-c, -s, zero), (-s, c, zero), (s, -c, zero), (zero, zero, one), (zero, zero, -one)]
        ],
        axis=1,
    )
    shade = cfg.ambient + cfg.diffuse * jnp.maximum(normals @ sun, 0.0)  # (K, 6)
    y_axis, x_axis = jnp.stack([-s, c], -1), jnp.stack([c, s], -1)  # (K, 2)
    axis = jnp.stack([y_axis, y_axis, x_axis, x_axis, x_axis, x_axis], axis=1)  # (K, 6, 2)
    half = jnp.stack([half_w, half_w, half_l, half_l, half_l, half_l], axis=1)  # (K, 6)
    offset = half - axis[..., 0] * x[:, None] - axis[..., 1] * y[:, None]
    per_box = lambda v: jnp.broadcast_to(v[:, None], shade.shape)  # noqa: E731
    side = jnp.broadcast_to(jnp.asarray([1.0, 1.0, 1.0, 1.0, 0.0, 0.0], jnp.float32), shade.shape)
    table = jnp.concatenate(
        [
            color_k3[:, None, :] * shade[..., None],
            axis,
            jnp.stack(
                [offset, 2.0 * half, per_box(z_lo), per_box(z_hi), per_box(style_k.astype(jnp.float32)), side], -1
            ),
        ],
        axis=-1,
    )
    return table.reshape(-1, table.shape[-1])


def _mod(x: jnp.ndarray, period: float) -> jnp.ndarray:
    """x mod period for period > 0 (cheaper than jnp.mod's exact float remainder)."""
    return x - jnp.floor(x * (1.0 / period)) * period


def _box_pattern(rgb, style, z_rel, z_abs, s_m, s_frac, side):
    """Colour a box surface point by its style (vehicle windows and wheels, building floors and
    windows, pedestrian head and legs); `side` is False on the roof."""
    dark = jnp.float32(0.08)
    # Vehicles: a glass band in the upper part of the sides, tyres / underbody at the bottom.
    glass = jnp.asarray([0.10, 0.12, 0.15], jnp.float32)
    v_window = side & (z_rel > 0.58) & (z_rel < 0.93) & (s_frac > 0.07) & (s_frac < 0.93)
    v_wheels = side & (z_rel < 0.22)
    vehicle = jnp.where(v_window[..., None], glass, rgb)
    vehicle = jnp.where(v_wheels[..., None], dark, vehicle)
    # Buildings: a darker ledge every 3 m and a grid of windows between them.
    floor_z = _mod(z_abs, 3.0)
    col_s = _mod(s_m, 2.6)
    b_ledge = side & (floor_z < 0.28)
    b_window = side & (floor_z > 0.85) & (floor_z < 2.25) & (col_s > 0.6) & (col_s < 1.9) & (z_rel < 0.97)
    window_rgb = jnp.asarray([0.16, 0.21, 0.29], jnp.float32) + 0.12 * (floor_z - 0.85)[..., None]
    building = jnp.where(b_ledge[..., None], rgb * 0.72, rgb)
    building = jnp.where(b_window[..., None], window_rgb, building)
    # Pedestrians: a head on top, dark trousers below the waist.
    skin = jnp.asarray([0.80, 0.63, 0.50], jnp.float32)
    trousers = jnp.asarray([0.18, 0.20, 0.28], jnp.float32)
    person = jnp.where((z_rel > 0.86)[..., None], skin, rgb)
    person = jnp.where((z_rel < 0.47)[..., None], trousers, person)
    style = style[..., None]
    return jnp.where(style == 1, vehicle, jnp.where(style == 2, building, jnp.where(style == 3, person, rgb)))


@jax.named_scope("render_image")
def render_image(
    surface: jnp.ndarray,
    resolution: jnp.ndarray | float,
    palette: jnp.ndarray,
    intrinsics: jnp.ndarray,
    cam_rotation: jnp.ndarray,
    cam_position: jnp.ndarray,
    boxes: jnp.ndarray,
    box_color: jnp.ndarray,
    box_style: jnp.ndarray,
    box_valid: jnp.ndarray,
    *,
    width: int,
    height: int,
    cfg: RenderConfig = RenderConfig(),
) -> jnp.ndarray:
    """One camera image; pure JAX, written for one camera (`render_images` vmaps and jits it).

    Args:
      surface: (H, W) uint8 ground surface ids; resolution: metres per cell.
      palette: (S, 3) uint8 colour per surface id.
      intrinsics: (3, 3) pinhole matrix (no skew); cam_rotation: (3, 3) camera-to-global rotation
        of a level camera; cam_position: (3,) global.
      boxes: (K, 7) [x, y, z_center, yaw, length, width, height] global; box_color: (K, 3) in [0, 1];
      box_style: (K,) int (0 plain, 1 vehicle, 2 building, 3 pedestrian); box_valid: (K,) bool.

    Returns:
      (height, width, 3) uint8 image.
    """
    f32 = jnp.float32
    intrinsics, rot, pos = intrinsics.astype(f32), cam_rotation.astype(f32), cam_position.astype(f32)
    boxes, box_color = boxes.astype(f32), box_color.astype(f32)
    resolution = jnp.asarray(resolution, f32)
    sun = jnp.asarray(cfg.sun_direction, f32)
    sun = sun / jnp.linalg.norm(sun)
    horizon = jnp.asarray(cfg.sky_horizon, f32)
    zenith = jnp.asarray(cfg.sky_zenith, f32)
    n_boxes = boxes.shape[0]

    # Rays: direction = forward + right * xu + down * yv; level camera => right, forward horizontal.
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    xu = (jnp.arange(width, dtype=f32) + 0.5 - cx) / fx  # (W,)
    yv = (jnp.arange(height, dtype=f32) + 0.5 - cy) / fy  # (H,)
    right, down, forward = rot[:, 0], rot[:, 1], rot[:, 2]
    h_w2 = forward[None, :2] + xu[:, None] * right[None, :2]  # (W, 2)
    dz_h = forward[2] + down[2] * yv  # (H,)
    inv_dz = _safe_inverse(dz_h)
    pz = pos[2]

    # Nearest hit per pixel as one int32 key: the bits of the (positive) float t, whose order is
    # the order of t, with the low bits replaced by a code of what was hit (box face or ground).
    # One min-reduction then finds depth and surface together (2^-15 relative depth precision at K = 32).
    n_codes = 6 * n_boxes + 1  # 6 faces per box, then the ground
    code_bits = max(1, math.ceil(math.log2(n_codes)))
    if code_bits > 16:
        raise ValueError(f"{n_boxes} boxes per image is too many for the depth key; use at most 10000")
    code_mask = (1 << code_bits) - 1
    ground_code = 6 * n_boxes
    inf_bits = 0x7F800000  # keys at or above this are sky

    def key(t, code):
        return (jax.lax.bitcast_convert_type(t, jnp.int32) & ~code_mask) | code

    t0, t1, face = _column_slabs(pos[:2], h_w2, boxes, box_valid)
    z_lo = boxes[:, 2] - 0.5 * boxes[:, 6]
    z_hi = boxes[:, 2] + 0.5 * boxes[:, 6]
    cap_face = jnp.where(dz_h < 0.0, 4, 5)[:, None]  # looking down: the ray can enter through a roof

    def nearest(best, xs):
        t0_w, t1_w, face_w, zl, zh, k, box, color, style = xs
        # Each box's face rows come out of the loop as its stacked output, which XLA materialises;
        # computed outside, they would be fused into the per-pixel gather and redone per pixel.
        faces = _face_table(box[None], color[None], style[None], sun, cfg)
        a = (zl - pz) * inv_dz[:, None]  # (H, 1): where the ray crosses the bottom / top planes
        b = (zh - pz) * inv_dz[:, None]
        lo = jnp.minimum(a, b)
        t_in = jnp.maximum(t0_w[None, :], lo)  # (H, W)
        t_out = jnp.minimum(t1_w[None, :], jnp.maximum(a, b))
        code = 6 * k + jnp.where(lo > t0_w[None, :], cap_face, face_w[None, :])
        hit = (t_in <= t_out) & (t_in > _NEAR)
        return jnp.minimum(best, jnp.where(hit, key(t_in, code), jnp.int32(0x7FFFFFFF))), faces

    t_ground = jnp.where(dz_h < 0.0, -pz * inv_dz, jnp.inf)  # (H,)
    init = jnp.broadcast_to(key(t_ground, ground_code)[:, None], (height, width))
    best, table = jax.lax.scan(
        nearest,
        init,
        (t0.T, t1.T, face.T, z_lo, z_hi, jnp.arange(n_boxes, dtype=jnp.int32), boxes, box_color, box_style),
    )
    table = table.reshape(6 * n_boxes, _FACE_COLUMNS)  # rows of `_face_table`
    is_sky = best >= inf_bits
    code = best & code_mask
    is_ground = ~is_sky & (code == ground_code)
    is_box = ~is_sky & ~is_ground
    t_hit = jnp.where(is_sky, 0.0, jax.lax.bitcast_convert_type(best & ~code_mask, f32))
    hit_x = pos[0] + t_hit * h_w2[None, :, 0]
    hit_y = pos[1] + t_hit * h_w2[None, :, 1]
    hit_z = pz + t_hit * dz_h[:, None]
    ray_len = jnp.sqrt(jnp.sum(h_w2**2, axis=-1)[None, :] + (dz_h**2)[:, None])  # |direction| per pixel
    dist = t_hit * ray_len

    # Boxes: sunlit face colour and style pattern from the hit face's row of the face table.
    row = table[jnp.minimum(code, ground_code - 1)] if n_boxes else jnp.zeros((height, width, _FACE_COLUMNS), f32)
    s_m = hit_x * row[..., 3] + hit_y * row[..., 4] + row[..., 5]
    s_frac = s_m / jnp.maximum(row[..., 6], 1e-3)
    z_rel = (hit_z - row[..., 7]) / jnp.maximum(row[..., 8] - row[..., 7], 1e-3)
    side = row[..., 10] > 0.5
    box_rgb = _box_pattern(row[..., :3], row[..., 9].astype(jnp.int32), z_rel, hit_z - row[..., 7], s_m, s_frac, side)

    # Ground: nearest texel of the raster (grass outside it), with a little brightness noise.
    n_rows, n_cols = surface.shape
    r = jnp.floor(hit_y / resolution).astype(jnp.int32)
    c = jnp.floor(hit_x / resolution).astype(jnp.int32)
    inside = (r >= 0) & (r < n_rows) & (c >= 0) & (c < n_cols) & is_ground
    cell = jnp.clip(r, 0, n_rows - 1) * n_cols + jnp.clip(c, 0, n_cols - 1)
    surface_id = jnp.where(inside, surface.reshape(-1)[cell].astype(jnp.int32), 0)
    ground_rgb = palette.astype(f32)[surface_id] / 255.0
    noise = cfg.ground_noise * _texel_noise(r, c) + cfg.ground_patch_noise * _texel_noise(r >> 4, c >> 4)
    ground_rgb = ground_rgb * (1.0 + noise * jnp.exp(-dist / cfg.noise_fade))[..., None]

    # Sky: horizon colour blending into the zenith colour with elevation.
    elevation = dz_h[:, None] / jnp.sqrt(jnp.sum(h_w2**2, axis=-1))[None, :]  # tan of the ray's elevation
    mix = jnp.sqrt(jnp.clip(elevation / cfg.sky_falloff, 0.0, 1.0))[..., None]
    sky_rgb = horizon * (1.0 - mix) + zenith * mix

    surface_rgb = jnp.where(is_box[..., None], box_rgb, ground_rgb)
    fog = (1.0 - jnp.exp(-dist / cfg.fog_distance))[..., None]
    surface_rgb = surface_rgb * (1.0 - fog) + horizon * fog
    rgb = jnp.where(is_sky[..., None], sky_rgb, surface_rgb)
    return jnp.clip(jnp.round(rgb * 255.0), 0.0, 255.0).astype(jnp.uint8)


@functools.partial(jax.jit, static_argnames=("width", "height", "cfg"))
def _render_chunk(
    surface,
    resolution,
    palette,
    intrinsics,
    cam_rotation,
    cam_position,
    boxes,
    box_color,
    box_style,
    box_valid,
    *,
    width,
    height,
    cfg,
):
    """render_image vmapped over a chunk of images (leading axis of the per-image arguments)."""
    per_image = functools.partial(render_image, width=width, height=height, cfg=cfg)
    return jax.vmap(per_image, in_axes=(None, None, None, 0, 0, 0, 0, 0, 0, 0))(
        surface, resolution, palette, intrinsics, cam_rotation, cam_position, boxes, box_color, box_style, box_valid
    )


def _check_level(cam_rotation: np.ndarray) -> None:
    r = np.asarray(cam_rotation, np.float64)
    # Level: camera x (right) and z (forward) horizontal, camera y (down) is global -z.
    tilt = np.max(np.abs(np.stack([r[..., 2, 0], r[..., 2, 2], r[..., 0, 1], r[..., 1, 1], r[..., 2, 1] + 1.0])))
    if tilt > 1e-3:
        raise ValueError(
            f"render_images needs level cameras (no pitch or roll), but a rotation is tilted by ~{tilt:.3g}; "
            "build rotations with drivesim.synth.rig.camera_rotation(heading) composed with a yaw-only ego pose."
        )


@jax.named_scope("render_images")
def render_images(
    surface,
    resolution: float,
    palette,
    intrinsics,
    cam_rotation,
    cam_position,
    boxes,
    box_color,
    box_style,
    box_valid,
    *,
    width: int,
    height: int,
    cfg: RenderConfig = RenderConfig(),
) -> jnp.ndarray:
    """Render N camera images (the jitted entry point; chunked on the host to bound memory).

    Args:
      surface: (H, W) uint8 ground ids (see `drivesim.synth.texture`); pass a jax array to avoid
        copying a large raster to the device on every call.
      resolution: metres per raster cell.
      palette: (S, 3) uint8 colour per surface id (e.g. `texture.SURFACE_COLORS`).
      intrinsics: (N, 3, 3) pinhole matrices for `width` x `height` images.
      cam_rotation: (N, 3, 3) camera-to-GLOBAL rotation of level cameras (camera x right, y down,
        z forward).
      cam_position: (N, 3) global camera positions.
      boxes: (N, K, 7) [x, y, z_center, yaw, length, width, height] in the global frame.
      box_color: (N, K, 3) float in [0, 1].
      box_style: (N, K) int32: 0 plain, 1 vehicle, 2 building, 3 pedestrian.
      box_valid: (N, K) bool; invalid (padding) boxes are not drawn.
      width, height: image size in pixels.
      cfg: look and chunk size.

    Returns:
      (N, height, width, 3) uint8 images.
    """
    intrinsics = np.asarray(intrinsics, np.float32)
    cam_rotation = np.asarray(cam_rotation, np.float32)
    _check_level(cam_rotation)
    per_image = [
        intrinsics,
        cam_rotation,
        np.asarray(cam_position, np.float32),
        np.asarray(boxes, np.float32),
        np.asarray(box_color, np.float32),
        np.asarray(box_style, np.int32),
        np.asarray(box_valid, bool),
    ]
    n = intrinsics.shape[0]
    if n == 0:
        return jnp.zeros((0, height, width, 3), jnp.uint8)
    if per_image[3].shape[1] < 2:  # pad to two box slots: a one-step box loop compiles far slower
        pad = 2 - per_image[3].shape[1]
        per_image[3:] = [np.concatenate([a, np.zeros((n, pad) + a.shape[2:], a.dtype)], axis=1) for a in per_image[3:]]
    # Every chunk has cfg.chunk_size images (the last one padded by repeating the last image), so
    # any N runs one compiled program; chunks are dispatched asynchronously, then concatenated.
    chunk = cfg.chunk_size
    n_pad = -(-n // chunk) * chunk
    if n_pad > n:
        per_image = [np.concatenate([a, np.repeat(a[-1:], n_pad - n, axis=0)]) for a in per_image]
    surface = jnp.asarray(surface)
    palette = jnp.asarray(palette, jnp.uint8)
    resolution = jnp.float32(resolution)
    out = [
        _render_chunk(
            surface, resolution, palette, *[a[i : i + chunk] for a in per_image], width=width, height=height, cfg=cfg
        )
        for i in range(0, n_pad, chunk)
    ]
    images = out[0] if len(out) == 1 else jnp.concatenate(out)
    return images[:n]


# ---------------------------------------------------------------------------------------------
# Choosing the K boxes each camera gets.


def horizontal_fov(intrinsics: np.ndarray, width: int) -> np.ndarray:
    """(...,) horizontal field of view in degrees of (..., 3, 3) intrinsics for `width`-pixel images."""
    k = np.asarray(intrinsics, np.float64)
    fx, cx = k[..., 0, 0], k[..., 0, 2]
    return np.degrees(np.arctan2(cx, fx) + np.arctan2(width - cx, fx))


def select_boxes(
    cam_position: np.ndarray,
    cam_forward: np.ndarray,
    boxes: np.ndarray,
    color: np.ndarray,
    style: np.ndarray,
    k: int,
    max_distance: float = 120.0,
    fov_deg: float | np.ndarray = 130.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pick, for each camera, the k nearest boxes whose footprint can be in its view (numpy).

    A box is kept if its footprint comes within `max_distance` of the camera and its horizontal
    angular extent overlaps the camera's cone of `fov_deg` degrees about `cam_forward` (exact for
    level cameras: 2-D footprint corners against the cone; use `horizontal_fov` plus a few degrees
    for a tight cone). Nearness is the distance from the camera to the footprint.

    Args:
      cam_position: (..., 3) or (..., 2) global camera positions.
      cam_forward: (..., 3) or (..., 2) viewing directions (only x, y are used).
      boxes: (M, 7) [x, y, z_center, yaw, length, width, height]; color: (M, 3); style: (M,).
      k: boxes to keep per camera.
      fov_deg: scalar or (...,) cone width per camera.

    Returns:
      boxes (..., k, 7) float32, color (..., k, 3) float32, style (..., k) int32, valid (..., k)
      bool; nearest first, padded with zeros and valid False.
    """
    pos = np.asarray(cam_position, np.float64)[..., :2]
    fwd = np.asarray(cam_forward, np.float64)[..., :2]
    batch = np.broadcast_shapes(pos.shape[:-1], fwd.shape[:-1], np.shape(fov_deg))
    pos = np.broadcast_to(pos, batch + (2,)).reshape(-1, 2)
    fwd = np.broadcast_to(fwd, batch + (2,)).reshape(-1, 2)
    half_fov = np.radians(np.broadcast_to(np.asarray(fov_deg, np.float64), batch).reshape(-1)) / 2.0
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    color = np.asarray(color, np.float32).reshape(-1, 3)
    style = np.asarray(style, np.int32).reshape(-1)
    c_n = pos.shape[0]
    m = boxes.shape[0]

    out_boxes = np.zeros((c_n, k, 7), np.float32)
    out_color = np.zeros((c_n, k, 3), np.float32)
    out_style = np.zeros((c_n, k), np.int32)
    out_valid = np.zeros((c_n, k), bool)
    if m and k:
        cos_b, sin_b = np.cos(boxes[:, 3]), np.sin(boxes[:, 3])
        hl, hw = boxes[:, 4] / 2.0, boxes[:, 5] / 2.0
        # Camera in each box's frame (C, M): distance to the footprint rectangle.
        rx = pos[:, None, 0] - boxes[None, :, 0]
        ry = pos[:, None, 1] - boxes[None, :, 1]
        lx, ly = cos_b * rx + sin_b * ry, -sin_b * rx + cos_b * ry
        dist = np.hypot(np.maximum(np.abs(lx) - hl, 0.0), np.maximum(np.abs(ly) - hw, 0.0))
        inside = dist == 0.0
        # Angular extent of the footprint corners about the camera, relative to its forward.
        along = hl[:, None] * np.array([1.0, 1.0, -1.0, -1.0])  # (M, 4) corners in the box frame
        across = hw[:, None] * np.array([1.0, -1.0, 1.0, -1.0])
        corner_x = boxes[:, None, 0] + cos_b[:, None] * along - sin_b[:, None] * across
        corner_y = boxes[:, None, 1] + sin_b[:, None] * along + cos_b[:, None] * across
        heading = np.arctan2(fwd[:, 1], fwd[:, 0])  # (C,)
        centre_ang = _wrap(np.arctan2(-ry, -rx) - heading[:, None])  # (C, M)
        corner_ang = np.arctan2(corner_y[None] - pos[:, None, None, 1], corner_x[None] - pos[:, None, None, 0])
        rel = _wrap(corner_ang - heading[:, None, None] - centre_ang[..., None])  # about the centre direction
        lo = centre_ang + rel.min(-1)
        hi = centre_ang + rel.max(-1)
        # Overlap of [lo, hi] with [-half, half] (the interval is < pi wide, so one wrap suffices).
        h = half_fov[:, None]
        overlap = ((lo <= h) & (hi >= -h)) | ((lo + 2 * np.pi <= h) & (hi + 2 * np.pi >= -h))
        overlap |= (lo - 2 * np.pi <= h) & (hi - 2 * np.pi >= -h)
        keep = (inside | overlap) & (dist <= max_distance)
        key = np.where(keep, dist, np.inf)
        order = np.argsort(key, axis=1, kind="stable")[:, :k]
        taken = np.take_along_axis(keep, order, axis=1)
        n_take = order.shape[1]
        out_boxes[:, :n_take] = np.where(taken[..., None], boxes[order], 0.0)
        out_color[:, :n_take] = np.where(taken[..., None], color[order], 0.0)
        out_style[:, :n_take] = np.where(taken, style[order], 0)
        out_valid[:, :n_take] = taken
    return (
        out_boxes.reshape(batch + (k, 7)),
        out_color.reshape(batch + (k, 3)),
        out_style.reshape(batch + (k,)),
        out_valid.reshape(batch + (k,)),
    )


def _wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


# ---------------------------------------------------------------------------------------------
# Benchmark.


def benchmark_render(
    n_images: int = 240, width: int = 160, k: int = 32, cfg: RenderConfig = RenderConfig(), repeats: int = 3
) -> float:
    """Images per second of `render_images` after compilation (best of `repeats` timed runs), on a
    synthetic street: a 400 m raster with a marked road, cars on it and buildings beside it, all K
    box slots valid, the six rig cameras in turn."""
    from drivesim.synth import rig, texture

    rng = np.random.default_rng(0)
    res = 0.1
    surface = np.full((4000, 4000), texture.GRASS, np.uint8)
    surface[1850:2150] = texture.SIDEWALK
    surface[1900:2100] = texture.ASPHALT
    surface[1998:2002] = texture.YELLOW
    surface[1948:1952, (np.arange(4000) % 90) < 30] = texture.WHITE
    cams = rig.nuscenes_rig(width)
    height = cams[0].height
    n_cars, n_buildings = k // 2, k - k // 2
    cars = np.stack(
        [
            rng.uniform(150, 250, n_cars),
            rng.choice([195.0, 205.0], n_cars),
            np.full(n_cars, 0.8),
            rng.uniform(-0.1, 0.1, n_cars),
            np.full(n_cars, 4.5),
            np.full(n_cars, 1.9),
            np.full(n_cars, 1.6),
        ],
        axis=1,
    )
    side = rng.choice([-1.0, 1.0], n_buildings)
    heights = rng.uniform(6, 30, n_buildings)
    buildings = np.stack(
        [
            rng.uniform(120, 280, n_buildings),
            200.0 + side * rng.uniform(25, 40, n_buildings),
            heights / 2,
            np.zeros(n_buildings),
            rng.uniform(10, 30, n_buildings),
            rng.uniform(10, 20, n_buildings),
            heights,
        ],
        axis=1,
    )
    all_boxes = np.concatenate([cars, buildings])
    colors = rng.uniform(0.2, 0.9, (k, 3))
    styles = np.concatenate([np.ones(n_cars), np.full(n_buildings, 2)]).astype(np.int32)

    idx = np.arange(n_images) % 6
    ego = np.stack([np.linspace(180, 220, n_images), np.full(n_images, 195.0), np.zeros(n_images)], axis=1)
    intr = np.stack([cams[i].intrinsics for i in idx])
    rot = np.stack([cams[i].rotation for i in idx])  # ego yaw 0: ego frame == global axes
    pos = ego + np.stack([cams[i].translation for i in idx])
    boxes = np.broadcast_to(all_boxes, (n_images, k, 7))
    color = np.broadcast_to(colors, (n_images, k, 3))
    style = np.broadcast_to(styles, (n_images, k))
    valid = np.ones((n_images, k), bool)
    surface_j = jnp.asarray(surface)
    args = (surface_j, res, texture.SURFACE_COLORS, intr, rot, pos, boxes, color, style, valid)
    render_images(*args, width=width, height=height, cfg=cfg).block_until_ready()  # compile
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        render_images(*args, width=width, height=height, cfg=cfg).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return n_images / best


if __name__ == "__main__":
    t = time.perf_counter()
    benchmark_render(n_images=8, repeats=0)
    compile_s = time.perf_counter() - t
    rate = benchmark_render(n_images=2400)
    print(f"render: {rate:.0f} images/s (160x90, K=32, after a {compile_s:.1f} s compile and first call)")
