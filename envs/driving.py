"""PyBullet driving: pybullet_data's racecar on a procedurally generated closed track.

Ids: ``rlkit/Driving-v0`` (state observations, 5 steering angles at fixed throttle) and ``rlkit/DrivingRGB-v0``
(84x84x3 forward camera). Every other choice is an env kwarg (see :class:`DrivingEnv`), recorded in a run's
config through ``make_vec_env``'s ``settings_dict``. A privileged pure-pursuit + PID driver,
:class:`DrivingExpert`, validates that generated tracks are drivable (:func:`run_expert`).
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import pybullet as p
import pybullet_data
from pybullet_utils import bullet_client

from rlkit.envs.driving_track import Track, generate_track
from rlkit.envs.pixels import PixelLayout
from rlkit.errors import RLKitError

OBS_TYPES = ("state", "rgb")
ACTION_TYPES = ("discrete", "discrete_steer_throttle", "continuous")
RENDERERS = ("tiny", "egl")

# racecar.urdf joints: rear wheels driven, front wheels free, two steering hinges; base frame at the rear axle.
_DRIVE_WHEELS = (2, 3)
_FREE_WHEELS = (5, 7)
_STEER_JOINTS = (4, 6)
_WHEEL_RADIUS = 0.05
WHEELBASE = 0.325
_CAR_CENTRE = 0.18  # metres ahead of the base frame
_CAR_WIDTH = 0.3
_RAY_START = 0.32  # rays start outside the car's own collision shapes
_RAY_HEIGHT = 0.1

_CAM_FOV, _CAM_HEIGHT, _CAM_PITCH = 80.0, 0.3, 0.1  # forward camera: degrees, metres, radians down
_GROUND_RGBA = (0.35, 0.55, 0.3, 1.0)
_GRASS_RGB, _SKY_RGB = (70, 110, 60), (185, 210, 240)  # background painted into camera frames
_ROAD_RGBA = (0.3, 0.3, 0.32, 1.0)
_BORDER_RGBA = (0.95, 0.95, 0.95, 1.0)
_OBSTACLE_RGBA = (0.85, 0.25, 0.1, 1.0)


def _quiet(fn: Callable[[], Any]) -> Any:
    """Call ``fn`` with the process's stdout silenced (pybullet prints ``argv[0]=`` on every connect)."""
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        return fn()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _check_knobs(k: dict[str, Any]) -> None:
    """One-line RLKitError for an impossible combination of DrivingEnv kwargs (called at construction)."""
    for name in ("laps", "action_repeat", "track_harmonics", "num_obstacles", "n_rays"):
        value = k[name]
        low = 0 if name in ("num_obstacles", "n_rays") else (2 if name == "track_harmonics" else 1)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise RLKitError(f"{name} must be an integer >= {low}; got {value!r}.")
    for name in ("track_width", "track_radius", "min_turn_radius", "max_speed", "max_steer", "ray_length",
                 "physics_dt"):
        if not (isinstance(k[name], (int, float)) and math.isfinite(k[name]) and k[name] > 0):
            raise RLKitError(f"{name} must be a number > 0; got {k[name]!r}.")
    if k["track_width"] <= _CAR_WIDTH:
        raise RLKitError(f"track_width must exceed the car's width ({_CAR_WIDTH} m); got {k['track_width']}.")
    if k["track_radius"] <= 2 * k["track_width"]:
        raise RLKitError(f"track_radius must be > 2 x track_width ({2 * k['track_width']} m); got {k['track_radius']}.")
    if not 0 <= k["track_roughness"] < 0.6:
        raise RLKitError(f"track_roughness must be in [0, 0.6); got {k['track_roughness']!r}.")
    if k["min_turn_radius"] >= k["track_radius"]:
        raise RLKitError(f"min_turn_radius ({k['min_turn_radius']} m) must be < track_radius ({k['track_radius']} m): "
                         "even a circle turns tighter than that.")
    # obstacles sit one per equal stretch of road after the first 3 m (and 1 m before the line); each needs >= 1 m
    lap = 2 * math.pi * k["track_radius"]
    room = int(lap - 4.0)
    if k["num_obstacles"] > room:
        raise RLKitError(f"num_obstacles {k['num_obstacles']} does not fit on a ~{lap:.0f} m track "
                         f"(track_radius {k['track_radius']}): at most {room}, one per metre of road.")


def _choice(name: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise RLKitError(f"unknown {name} {value!r}; valid: {', '.join(valid)}.")
    return value


class DrivingEnv(gym.Env):
    """Drive a racecar (real wheel motors and steering hinges) around a random closed track.

    The track is a circle whose radius is perturbed by a random Fourier series drawn from ``self.np_random``
    (a new track every reset; ``track_seed`` fixes one track). The road and its border lines are visual meshes
    only, so the car drives on the ground plane; optional static obstacles (boxes/cylinders) on the road have
    collision shapes. Physics runs at ``physics_dt`` with ``action_repeat`` substeps per env step (defaults: 1/120 s
    x 4 = 30 Hz control).

    Observations (``obs_type``):
      - ``state``: float32 vector ``[lateral offset / half width, sin and cos of heading error, speed / max_speed,
        steering / max_steer, curvature (1/m) at 1, 2 and 4 m ahead, n_rays range fractions]``; the rays (one
        ``rayTestBatch`` call) fan over +-90 degrees at 0.1 m height and see obstacles.
      - ``rgb``: uint8 ``(84, 84, 3)`` forward camera (the ego car and the ground plane are hidden while
        rendering, the ground is painted in afterwards: twice as fast). ``grayscale=True`` gives one
        channel, ``frame_stack=k`` concatenates the last k frames along the channel axis, ``channels_first=True``
        puts channels first (``(k, 84, 84)`` with grayscale, the layout rlkit's CNN encoders and Atari use).

    Actions (``action_type``):
      - ``discrete``: 5 steering angles in [-1, 1] x ``max_steer`` at fixed ``throttle`` (for DQN).
      - ``discrete_steer_throttle``: 5 steering angles x throttle in {0, 0.5, 1} (15 actions).
      - ``continuous``: Box(-1, 1, (2,)) = (steering, throttle); throttle is the wheel speed target as a fraction
        of ``max_speed`` (negative reverses).

    Reward per step: ``progress_weight`` x metres of centreline progress (negative when going backwards)
    - ``lane_weight`` x (lateral offset / half width)^2 - ``collision_penalty`` on contact with an obstacle
    - ``off_track_penalty`` when more than ``off_track_margin`` beyond the road edge. Episodes terminate on those
    two events (``terminate_on_collision``, ``terminate_off_track``), when the car flips, or after ``laps`` laps.

    Info: ``route_completion`` (fraction of ``laps`` laps driven), ``laps`` (completed), ``off_track``,
    ``collision``, ``speed`` (m/s), ``lateral_offset`` (m), ``is_success`` (all laps done).

    Difficulty knobs (defaults): ``track_width`` 1.5 m (car is 0.3 m wide), ``track_radius`` 6 m (lap ~ 2 pi r),
    ``track_roughness`` 0.25 (relative radial perturbation), ``track_harmonics`` 4 (highest Fourier harmonic:
    more = more curves per lap), ``min_turn_radius`` 1.5 m (tighter draws are flattened), ``num_obstacles`` 0.
    """

    # episode_metrics: final-step info keys that rlkit's evaluation averages over episodes (eval.json, tables)
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30,
                "episode_metrics": ("route_completion", "laps", "is_success", "collision", "off_track")}

    def __init__(
        self,
        obs_type: str = "state",
        action_type: str = "discrete",
        render_mode: str | None = None,
        track_width: float = 1.5,
        track_radius: float = 6.0,
        track_roughness: float = 0.25,
        track_harmonics: int = 4,
        min_turn_radius: float = 1.5,
        num_obstacles: int = 0,
        track_seed: int | None = None,
        laps: int = 1,
        max_speed: float = 3.0,
        max_steer: float = 0.5,
        throttle: float = 0.6,
        n_rays: int = 9,
        ray_length: float = 4.0,
        image_size: int = 84,
        grayscale: bool = False,
        frame_stack: int = 1,
        channels_first: bool = False,
        renderer: str = "tiny",
        physics_dt: float = 1.0 / 120.0,
        action_repeat: int = 4,
        progress_weight: float = 1.0,
        lane_weight: float = 0.02,
        collision_penalty: float = 10.0,
        off_track_penalty: float = 10.0,
        off_track_margin: float = 0.3,
        terminate_on_collision: bool = True,
        terminate_off_track: bool = True,
    ) -> None:
        #: every constructor argument but render_mode, resolved (defaults included), e.g. for a run's config
        self.settings: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "render_mode")}
        self.obs_type = _choice("obs_type", obs_type, OBS_TYPES)
        self.action_type = _choice("action_type", action_type, ACTION_TYPES)
        self.renderer = _choice("renderer", renderer, RENDERERS)
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise RLKitError(f"unknown render_mode {render_mode!r}; valid: rgb_array or None.")
        _check_knobs(self.settings)
        self.render_mode = render_mode
        self.track_kwargs = dict(radius=track_radius, roughness=track_roughness, harmonics=track_harmonics,
                                 width=track_width, min_turn_radius=min_turn_radius)
        self.num_obstacles, self.track_seed, self.laps = num_obstacles, track_seed, laps
        self.max_speed, self.max_steer, self.throttle = max_speed, max_steer, throttle
        self.n_rays, self.ray_length = n_rays, ray_length
        self.image_size, self.grayscale, self.frame_stack = image_size, grayscale, frame_stack
        self.channels_first = channels_first
        self.physics_dt, self.action_repeat = physics_dt, action_repeat
        self.progress_weight, self.lane_weight = progress_weight, lane_weight
        self.collision_penalty, self.off_track_penalty, self.off_track_margin = (
            collision_penalty, off_track_penalty, off_track_margin)
        self.terminate_on_collision, self.terminate_off_track = terminate_on_collision, terminate_off_track

        self._pixels = PixelLayout(image_size, grayscale, frame_stack, channels_first)
        if self.action_type == "continuous":
            self.action_space: gym.spaces.Space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        else:
            steers = np.linspace(-1.0, 1.0, 5)
            throttles = [throttle] if self.action_type == "discrete" else [0.0, 0.5, 1.0]
            self._action_table = np.array([(s, t) for t in throttles for s in steers], dtype=np.float64)
            self.action_space = gym.spaces.Discrete(len(self._action_table))
        if self.obs_type == "state":
            low = np.array([-5, -1, -1, -2, -1.5, -5, -5, -5] + [0] * n_rays, dtype=np.float32)
            high = np.array([5, 1, 1, 2, 1.5, 5, 5, 5] + [1] * n_rays, dtype=np.float32)
            self.observation_space: gym.spaces.Space = gym.spaces.Box(low, high, None, np.float32)
        else:
            self.observation_space = self._pixels.space
        angles = np.linspace(-np.pi / 2, np.pi / 2, n_rays) if n_rays > 1 else np.zeros(n_rays)
        self._ray_dirs = np.stack([np.cos(angles), np.sin(angles)], axis=1)

        self._client: bullet_client.BulletClient | None = None
        self._mesh_dir: tempfile.TemporaryDirectory | None = None
        self._mesh_files: list[str] = []  # EGL road meshes of the current episode
        self._mesh_resets = 0  # names them: PyBullet caches OBJ files by path, so every reset needs new names
        self._egl_plugin = -1
        self.track: Track | None = None
        self._proj = p.computeProjectionMatrixFOV(_CAM_FOV, 1.0, 0.05, 30.0)
        rows = 1.0 - 2.0 * (np.arange(image_size) + 0.5) / image_size  # +1 top .. -1 bottom
        sky = rows * math.tan(math.radians(_CAM_FOV / 2)) > math.tan(_CAM_PITCH)
        sky_rgba, grass_rgba = np.array([*_SKY_RGB, 255], np.uint8), np.array([*_GRASS_RGB, 255], np.uint8)
        background = np.where(sky[:, None, None], sky_rgba, grass_rgba)  # (size, 1, 4)
        self._background = np.ascontiguousarray(np.broadcast_to(background, (image_size, image_size, 4)))
        self._background = self._background.view(np.uint32)  # (size, size, 1), matches an RGBA frame's view
        self._render_proj = p.computeProjectionMatrixFOV(60.0, 4.0 / 3.0, 0.1, 60.0)

    # ------------------------------------------------------------------ simulation setup
    def _connect(self) -> bullet_client.BulletClient:
        if self._client is None:
            self._client = _quiet(lambda: bullet_client.BulletClient(connection_mode=p.DIRECT))
            if self.renderer == "egl":
                import pkgutil

                egl = pkgutil.get_loader("eglRenderer")
                path = egl.get_filename() if egl is not None else "eglRendererPlugin"  # type: ignore[union-attr]
                self._egl_plugin = self._client.loadPlugin(path, "_eglRendererPlugin")
                if self._egl_plugin < 0:
                    raise RLKitError("renderer='egl' requested but pybullet's EGL plugin did not load.")
        return self._client

    def _build_world(self) -> None:
        c = self._connect()
        c.resetSimulation()
        c.setGravity(0, 0, -9.81)
        c.setPhysicsEngineParameter(fixedTimeStep=self.physics_dt, numSolverIterations=10,
                                    deterministicOverlappingPairs=1)
        c.configureDebugVisualizer(c.COV_ENABLE_GUI, 0)
        track = self.track
        assert track is not None
        ground_col = c.createCollisionShape(p.GEOM_PLANE)
        ground_vis = c.createVisualShape(p.GEOM_BOX, halfExtents=[60, 60, 0.01], rgbaColor=_GROUND_RGBA,
                                         visualFramePosition=[0, 0, -0.01])
        self._ground = c.createMultiBody(0, ground_col, ground_vis)
        c.changeDynamics(self._ground, -1, lateralFriction=1.0)
        self._add_road_meshes(c, track)
        self._obstacles = self._add_obstacles(c, track)
        start = track.point_at(0.0)
        yaw = math.atan2(track.tangents[0, 1], track.tangents[0, 0])
        # base frame is the rear axle: put the car's centre on the start line
        base = start - track.tangents[0] * _CAR_CENTRE
        self._car = c.loadURDF(f"{pybullet_data.getDataPath()}/racecar/racecar.urdf", [base[0], base[1], 0.05],
                               c.getQuaternionFromEuler([0, 0, yaw]))
        for j in _DRIVE_WHEELS + _FREE_WHEELS:
            c.setJointMotorControl2(self._car, j, p.VELOCITY_CONTROL, targetVelocity=0, force=0)
        self._car_links = [-1] + list(range(c.getNumJoints(self._car)))
        self._car_colours = {d[1]: d[7] for d in c.getVisualShapeData(self._car)}
        self._set_car_visible(False)

    def _add_road_meshes(self, c: bullet_client.BulletClient, track: Track) -> None:
        step = max(1, int(round(0.4 / track.spacing)))  # mesh every ~0.4 m: TinyRenderer cost grows with triangles
        s = track.s[::step]
        half = track.width / 2.0
        self._mesh_bodies = []
        if self.renderer == "egl":  # the previous episode's bodies went with resetSimulation: drop their files
            for path in self._mesh_files:
                if os.path.exists(path):
                    os.remove(path)
            self._mesh_files = []
            self._mesh_resets += 1
        for lo, hi, rgba, z in ((-half, half, _ROAD_RGBA, 0.002), (half - 0.06, half, _BORDER_RGBA, 0.004),
                                (-half, -half + 0.06, _BORDER_RGBA, 0.004)):
            left, right = track.point_at(s, hi), track.point_at(s, lo)
            n = len(s)
            verts = np.empty((2 * n, 3))
            verts[0::2, :2], verts[1::2, :2], verts[:, 2] = left, right, z
            idx = []
            for i in range(n):
                a, b, cc, d = 2 * i, 2 * i + 1, (2 * i + 2) % (2 * n), (2 * i + 3) % (2 * n)
                idx += [a, b, cc, cc, b, d]
            if self.renderer == "egl":  # the EGL plugin only draws meshes loaded from files
                vis = c.createVisualShape(p.GEOM_MESH, fileName=self._write_obj(verts, idx, len(self._mesh_bodies)),
                                          rgbaColor=rgba)
            else:
                vis = c.createVisualShape(p.GEOM_MESH, vertices=verts.tolist(), indices=idx, rgbaColor=rgba)
            self._mesh_bodies.append(c.createMultiBody(0, -1, vis))

    def _add_obstacles(self, c: bullet_client.BulletClient, track: Track) -> list[tuple[int, float, float, float]]:
        """Static obstacles at random arc lengths (after the first 3 m, one per equal stretch of road) on a random
        side, leaving a lane for the car on the other side; returns (body, s, lateral offset, radius)."""
        obstacles: list[tuple[int, float, float, float]] = []
        if self.num_obstacles == 0:
            return obstacles
        usable = track.length - 4.0
        gap = usable / self.num_obstacles
        for k in range(self.num_obstacles):
            s = 3.0 + gap * (k + float(self.np_random.uniform(0.2, 0.8)))
            side = 1.0 if self.np_random.uniform() < 0.5 else -1.0
            size = float(self.np_random.uniform(0.12, 0.2))
            # leave a free lane of at least car width + 0.35 m on the other side of the obstacle
            min_offset = _CAR_WIDTH + 0.35 - track.width / 2.0 + size * math.sqrt(2.0)
            offset = side * max(float(self.np_random.uniform(0.0, 0.3)) * track.width, min_offset)
            xy = track.point_at(s, offset)
            if self.np_random.uniform() < 0.5:
                col = c.createCollisionShape(p.GEOM_BOX, halfExtents=[size, size, 0.15])
                vis = c.createVisualShape(p.GEOM_BOX, halfExtents=[size, size, 0.15], rgbaColor=_OBSTACLE_RGBA)
            else:
                col = c.createCollisionShape(p.GEOM_CYLINDER, radius=size, height=0.3)
                vis = c.createVisualShape(p.GEOM_CYLINDER, radius=size, length=0.3, rgbaColor=_OBSTACLE_RGBA)
            body = c.createMultiBody(0, col, vis, [xy[0], xy[1], 0.15])
            obstacles.append((body, s, offset, size * math.sqrt(2.0)))
        return obstacles

    def _write_obj(self, verts: np.ndarray, indices: list[int], k: int) -> str:
        """Write road mesh ``k`` of this reset to an OBJ file and return its path. Names are unique per reset
        (``mesh{reset}_{k}.obj``): PyBullet caches OBJ files by path (``enableFileCaching=0`` does not stop it),
        so a rewritten file under an old name would keep drawing the first episode's road."""
        if self._mesh_dir is None:
            self._mesh_dir = tempfile.TemporaryDirectory(prefix="rlkit-driving-")
        path = os.path.join(self._mesh_dir.name, f"mesh{self._mesh_resets}_{k}.obj")
        self._mesh_files.append(path)
        with open(path, "w") as f:
            f.writelines(f"v {x:.5f} {y:.5f} {z:.5f}\n" for x, y, z in verts)
            f.write("vn 0 0 1\n")
            f.writelines(f"f {a + 1}//1 {b + 1}//1 {c + 1}//1\n"
                         for a, b, c in zip(indices[0::3], indices[1::3], indices[2::3]))
        return path

    def _set_car_visible(self, visible: bool) -> None:
        """Show or hide the ego car and the ground: hidden for the forward camera (faster), shown for render()."""
        c = self._client
        assert c is not None
        for link, rgba in self._car_colours.items():
            c.changeVisualShape(self._car, link, rgbaColor=rgba if visible else (0, 0, 0, 0))
        if self.renderer == "tiny":  # EGL clears to another colour than white: it draws the ground itself
            c.changeVisualShape(self._ground, -1, rgbaColor=_GROUND_RGBA if visible else (0, 0, 0, 0))

    # ------------------------------------------------------------------ privileged state
    def car_state(self) -> dict[str, float]:
        """Simulator truth: x, y (car centre), yaw, forward speed, steering angle, arc length s, lateral offset."""
        c = self._client
        assert c is not None and self.track is not None
        pos, orn = c.getBasePositionAndOrientation(self._car)
        vel, _ = c.getBaseVelocity(self._car)
        roll, pitch, yaw = c.getEulerFromQuaternion(orn)
        heading = np.array([math.cos(yaw), math.sin(yaw)])
        xy = np.array(pos[:2]) + heading * _CAR_CENTRE
        s, offset, self._hint = self.track.project(xy, self._hint)
        return {"x": float(xy[0]), "y": float(xy[1]), "yaw": yaw, "roll": roll, "pitch": pitch,
                "speed": float(heading @ np.array(vel[:2])), "steer": self._steer, "s": s, "offset": offset}

    def ground_truth(self) -> dict[str, float]:
        """Privileged state of the current frame (frame-dataset labels; see ``rlkit.vision.labels``). Reads only.

        ``lateral_offset`` (m, signed, left of the centreline positive), ``heading_error`` (rad in [-pi, pi): car yaw
        minus the centreline's direction at the car, positive = pointing left of it), ``speed`` (forward, m/s),
        ``steering`` (commanded steering angle, rad, positive = left), ``curvature_ahead`` (signed centreline
        curvature 2 m ahead, 1/m, positive = bends left), ``obstacle_range`` (m from the car's centre to the first
        obstacle straight ahead at ray height, ``ray_length`` + the ray start when nothing is hit).
        """
        if self._client is None or self.track is None:
            raise RLKitError("call reset() before ground_truth().")
        hint = self._hint
        try:
            state = self.car_state()
        finally:
            self._hint = hint  # the projection's search hint is part of the episode; leave it as it was
        track = self.track
        i = track.index_at(state["s"])
        err = state["yaw"] - math.atan2(track.tangents[i, 1], track.tangents[i, 0])
        heading = np.array([math.cos(state["yaw"]), math.sin(state["yaw"])])
        centre = np.array([state["x"], state["y"]])
        reach = _RAY_START + self.ray_length
        start, end = centre + heading * _RAY_START, centre + heading * reach
        hit = self._client.rayTest([*start, _RAY_HEIGHT], [*end, _RAY_HEIGHT])[0]
        return {
            "lateral_offset": float(state["offset"]),
            "heading_error": float((err + math.pi) % (2 * math.pi) - math.pi),
            "speed": float(state["speed"]),
            "steering": float(state["steer"]),
            "curvature_ahead": float(track.curvature[track.index_at(state["s"] + 2.0)]),
            "obstacle_range": float(_RAY_START + self.ray_length * (hit[2] if hit[0] >= 0 else 1.0)),
        }

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        rng = np.random.default_rng(self.track_seed) if self.track_seed is not None else self.np_random
        self.track = generate_track(rng, **self.track_kwargs)
        self._build_world()
        self._hint: int | None = None
        self._steer = 0.0
        self._progress = 0.0
        self._t = 0
        state = self.car_state()
        self._last_s = state["s"]
        info = self._info(state, False, False)
        return self._observe(state, reset=True), info

    def _command(self, action: Any) -> tuple[float, float]:
        if self.action_type == "continuous":
            a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
            return float(a[0]), float(a[1])
        steer, throttle = self._action_table[int(action)]
        return float(steer), float(throttle)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self._client is None or self.track is None:
            raise RLKitError("call reset() before step().")
        c = self._client
        steer, throttle = self._command(action)
        self._steer = steer * self.max_steer
        wheel_speed = throttle * self.max_speed / _WHEEL_RADIUS
        for j in _STEER_JOINTS:
            c.setJointMotorControl2(self._car, j, p.POSITION_CONTROL, targetPosition=self._steer, force=10)
        for j in _DRIVE_WHEELS:
            c.setJointMotorControl2(self._car, j, p.VELOCITY_CONTROL, targetVelocity=wheel_speed, force=10)
        collision = False
        for _ in range(self.action_repeat):
            c.stepSimulation()
            if self._obstacles and not collision:
                collision = any(len(c.getContactPoints(self._car, o[0])) > 0 for o in self._obstacles)
        self._t += 1
        state = self.car_state()
        ds = state["s"] - self._last_s
        ds -= self.track.length * round(ds / self.track.length)  # wrap across the start line
        self._last_s = state["s"]
        self._progress += ds
        half = self.track.width / 2.0
        off_track = abs(state["offset"]) > half + self.off_track_margin
        flipped = abs(state["roll"]) > 1.0 or abs(state["pitch"]) > 1.0
        reward = self.progress_weight * ds - self.lane_weight * min((state["offset"] / half) ** 2, 4.0)
        if collision:
            reward -= self.collision_penalty
        if off_track:
            reward -= self.off_track_penalty
        info = self._info(state, off_track, collision)
        terminated = bool(info["is_success"] or flipped or (collision and self.terminate_on_collision)
                          or (off_track and self.terminate_off_track))
        return self._observe(state), float(reward), terminated, False, info

    def _info(self, state: dict[str, float], off_track: bool, collision: bool) -> dict[str, Any]:
        assert self.track is not None
        completion = min(1.0, max(0.0, self._progress / (self.laps * self.track.length)))
        return {"route_completion": completion, "laps": int(max(0.0, self._progress) // self.track.length),
                "off_track": bool(off_track), "collision": bool(collision), "speed": state["speed"],
                "lateral_offset": state["offset"], "is_success": bool(completion >= 1.0)}

    # ------------------------------------------------------------------ observations
    def _observe(self, state: dict[str, float], reset: bool = False) -> np.ndarray:
        if self.obs_type == "state":
            return self._state_obs(state)
        return self._pixels.observe(self._camera(state), reset=reset)

    def _state_obs(self, state: dict[str, float]) -> np.ndarray:
        track = self.track
        assert track is not None and self._client is not None
        i = track.index_at(state["s"])
        tangent_yaw = math.atan2(track.tangents[i, 1], track.tangents[i, 0])
        err = state["yaw"] - tangent_yaw
        curv = track.curvature[track.index_at(state["s"] + np.array([1.0, 2.0, 4.0]))]
        head = [state["offset"] / (track.width / 2.0), math.sin(err), math.cos(err), state["speed"] / self.max_speed,
                state["steer"] / self.max_steer, *curv]
        rays = self._rays(state)
        obs = np.concatenate([np.asarray(head, dtype=np.float32), rays])
        space = self.observation_space
        return np.clip(obs, space.low, space.high).astype(np.float32)  # type: ignore[attr-defined]

    def _rays(self, state: dict[str, float]) -> np.ndarray:
        if self.n_rays == 0:
            return np.zeros(0, dtype=np.float32)
        cy, sy = math.cos(state["yaw"]), math.sin(state["yaw"])
        dirs = self._ray_dirs @ np.array([[cy, sy], [-sy, cy]])
        centre = np.array([state["x"], state["y"]])
        starts = np.empty((self.n_rays, 3))
        ends = np.empty((self.n_rays, 3))
        starts[:, :2] = centre + dirs * _RAY_START
        ends[:, :2] = centre + dirs * (_RAY_START + self.ray_length)
        starts[:, 2] = ends[:, 2] = _RAY_HEIGHT
        hits = self._client.rayTestBatch(starts.tolist(), ends.tolist())  # type: ignore[union-attr]
        return np.array([h[2] if h[0] >= 0 else 1.0 for h in hits], dtype=np.float32)

    def _rgba(self, view: list[float], proj: tuple[float, ...], width: int, height: int) -> np.ndarray:
        c = self._client
        assert c is not None
        renderer = p.ER_BULLET_HARDWARE_OPENGL if self.renderer == "egl" else p.ER_TINY_RENDERER
        _, _, rgba, _, _ = c.getCameraImage(width, height, view, proj, renderer=renderer,
                                            flags=p.ER_NO_SEGMENTATION_MASK, shadow=0)
        return np.ascontiguousarray(rgba, dtype=np.uint8).reshape(height, width, 4)

    def _image(self, view: list[float], proj: tuple[float, ...], width: int, height: int) -> np.ndarray:
        return self._rgba(view, proj, width, height)[:, :, :3]

    def _camera(self, state: dict[str, float]) -> np.ndarray:
        cy, sy = math.cos(state["yaw"]), math.sin(state["yaw"])
        x, y = state["x"], state["y"]
        ahead = _CAM_HEIGHT / math.tan(_CAM_PITCH)
        view = p.computeViewMatrix([x + 0.2 * cy, y + 0.2 * sy, _CAM_HEIGHT],
                                   [x + (0.2 + ahead) * cy, y + (0.2 + ahead) * sy, 0.0], [0, 0, 1])
        rgba = self._rgba(view, self._proj, self.image_size, self.image_size)
        # The ground is hidden while rendering (a flat colour costs TinyRenderer as much as the rest of the scene):
        # paint the empty (opaque white) background as sky above the horizon and grass below it.
        packed = rgba.view(np.uint32)
        np.copyto(packed, self._background, where=packed == np.uint32(0xFFFFFFFF))
        return rgba  # (size, size, 4); PixelLayout keeps RGB (or luma) in the chosen layout

    def render(self) -> np.ndarray | None:
        """Third-person chase view (240x320 RGB) with the car visible."""
        if self.render_mode != "rgb_array" or self._client is None or self.track is None:
            return None
        state = self.car_state()
        cy, sy = math.cos(state["yaw"]), math.sin(state["yaw"])
        x, y = state["x"], state["y"]
        view = p.computeViewMatrix([x - 1.6 * cy, y - 1.6 * sy, 1.0], [x + 1.0 * cy, y + 1.0 * sy, 0.0], [0, 0, 1])
        self._set_car_visible(True)
        try:
            rgba = self._rgba(view, self._render_proj, 320, 240)
        finally:
            self._set_car_visible(False)
        packed = rgba.view(np.uint32)
        np.copyto(packed, np.array([*_SKY_RGB, 255], np.uint8).view(np.uint32), where=packed == np.uint32(0xFFFFFFFF))
        return np.ascontiguousarray(rgba[:, :, :3])

    def close(self) -> None:
        if self._client is not None:
            try:
                if self._egl_plugin >= 0:
                    self._client.unloadPlugin(self._egl_plugin)
                self._client.disconnect()
            finally:
                self._client = None
                self._egl_plugin = -1
        if self._mesh_dir is not None:
            self._mesh_dir.cleanup()
            self._mesh_dir = None
        self._mesh_files = []


class DrivingExpert:
    """Privileged driver: pure pursuit on the centreline (shifted sideways around obstacles) for steering and a
    PID on speed, both from the simulator's true state (``DrivingEnv.car_state``), not from observations.

    ``act()`` returns an action in the env's action space (the nearest table entry for discrete action types).
    The target speed is ``speed`` (default 0.8 x ``max_speed``), lowered in curves to keep lateral acceleration
    under ``lateral_accel`` m/s^2.
    """

    def __init__(self, env: gym.Env, speed: float | None = None, lookahead: float = 0.6, lateral_accel: float = 3.0,
                 kp: float = 0.5, ki: float = 0.3, kd: float = 0.02) -> None:
        self.env: DrivingEnv = env.unwrapped  # type: ignore[assignment]
        if not isinstance(self.env, DrivingEnv):
            raise RLKitError("DrivingExpert needs a DrivingEnv (rlkit/Driving-v0 or rlkit/DrivingRGB-v0).")
        self.speed = 0.8 * self.env.max_speed if speed is None else speed
        self.lookahead, self.lateral_accel = lookahead, lateral_accel
        self.kp, self.ki, self.kd = kp, ki, kd
        self.reset()

    def reset(self) -> None:
        """Clear the PID state (call after each env reset)."""
        self._integral = 0.0
        self._last_error: float | None = None

    def path_offset(self, s: float) -> float:
        """Lateral offset of the expert's path at arc length ``s``: 0, or beside the obstacles near ``s``."""
        env, track = self.env, self.env.track
        assert track is not None
        half = track.width / 2.0
        best = 0.0
        for _, s_obs, o, radius in env._obstacles:
            ds = abs((s - s_obs + track.length / 2) % track.length - track.length / 2)
            weight = float(np.clip((2.5 - ds) / 1.7, 0.0, 1.0))
            if weight == 0.0:
                continue
            side = -1.0 if o >= 0 else 1.0
            target = float(np.clip(o + side * (radius + 0.35), -half + 0.2, half - 0.2))
            if abs(weight * target) > abs(best):
                best = weight * target
        return best

    def act(self) -> Any:
        """The expert's action for the env's current state."""
        env, track = self.env, self.env.track
        assert track is not None
        st = env.car_state()
        dt = env.physics_dt * env.action_repeat
        speed = max(st["speed"], 0.0)
        ld = self.lookahead + 0.3 * speed
        s_target = st["s"] + ld
        target = track.point_at(s_target, self.path_offset(s_target))
        cy, sy = math.cos(st["yaw"]), math.sin(st["yaw"])
        rear = np.array([st["x"] - _CAR_CENTRE * cy, st["y"] - _CAR_CENTRE * sy])
        rel = target - rear
        local_x, local_y = rel[0] * cy + rel[1] * sy, -rel[0] * sy + rel[1] * cy
        dist = math.hypot(local_x, local_y)
        delta = math.atan2(2.0 * WHEELBASE * local_y, dist * dist)  # pure pursuit: atan(2 L sin(alpha) / ld)
        steer = float(np.clip(delta / env.max_steer, -1.0, 1.0))
        ahead = track.index_at(st["s"] + np.linspace(0.0, 2.0 + speed, 12))
        kappa = float(np.max(np.abs(track.curvature[ahead])))
        v_ref = min(self.speed, math.sqrt(self.lateral_accel / max(kappa, 1e-6)))
        error = v_ref - st["speed"]
        self._integral = float(np.clip(self._integral + error * dt, -1.0, 1.0))
        deriv = 0.0 if self._last_error is None else (error - self._last_error) / dt
        self._last_error = error
        throttle = float(np.clip(v_ref / env.max_speed + self.kp * error + self.ki * self._integral
                                 + self.kd * deriv, -1.0, 1.0))
        if env.action_type == "continuous":
            return np.array([steer, throttle], dtype=np.float32)
        cost = np.abs(env._action_table[:, 0] - steer) + 0.5 * np.abs(env._action_table[:, 1] - throttle)
        return int(np.argmin(cost))


def run_expert(env_id: str = "rlkit/Driving-v0", episodes: int = 3, seed: int = 0,
               **env_kwargs: Any) -> dict[str, float]:
    """Drive ``episodes`` episodes (seeds ``seed``, ``seed + 1``, ...) with :class:`DrivingExpert`; returns mean
    route completion, laps, return and length, and the success, off-track and collision rates."""
    env = gym.make(env_id, **env_kwargs)
    rows = []
    try:
        expert = DrivingExpert(env)
        for k in range(episodes):
            env.reset(seed=seed + k)
            expert.reset()
            ret, length, off, hit = 0.0, 0, False, False
            while True:
                _, reward, terminated, truncated, info = env.step(expert.act())
                ret, length = ret + reward, length + 1
                off, hit = off or info["off_track"], hit or info["collision"]
                if terminated or truncated:
                    break
            rows.append((info["route_completion"], info["laps"], float(info["is_success"]), float(off), float(hit),
                         ret, length))
    finally:
        env.close()
    mean = np.mean(np.array(rows, dtype=np.float64), axis=0)
    keys = ("route_completion", "laps", "success_rate", "off_track_rate", "collision_rate", "mean_return",
            "mean_length")
    return dict(zip(keys, (float(v) for v in mean)))
