"""Robot navigation in PyBullet: a differential-drive robot reaches a goal in a walled arena with obstacles.

``rlkit/Navigation-v0`` (state observations, discrete actions) and ``rlkit/NavigationRGB-v0`` (egocentric
84x84 RGB) are registered in ``rlkit.envs``; every other choice is a keyword argument of ``NavigationEnv``.
``NavigationExpert`` (A* on the privileged map + pure pursuit) validates levels and gives a baseline.
"""

from __future__ import annotations

import math
import pkgutil
from typing import Any

import gymnasium as gym
import numpy as np
import pybullet as pb
from pybullet_utils import bullet_client

from rlkit.envs.navigation_planning import (
    Obstacle,
    astar,
    cell_centers,
    distance_field,
    point_clearance,
    signed_distance,
)
from rlkit.envs.pixels import PixelLayout
from rlkit.errors import RLKitError

OBS_TYPES = ("state", "rgb")
ACTION_TYPES = ("discrete", "continuous")
PROGRESS_TYPES = ("geodesic", "euclidean")
RENDERERS = ("tiny", "egl")
# discrete actions as normalised (linear, angular) commands
DISCRETE_ACTIONS = np.array([(1.0, 0.0), (0.0, 1.0), (0.0, -1.0), (1.0, 0.5), (1.0, -0.5)])
DISCRETE_ACTION_NAMES = ("forward", "turn_left", "turn_right", "forward_left", "forward_right")

ROBOT_HEIGHT = 0.3
WALL_HEIGHT = 0.6
WALL_THICKNESS = 0.2
OBSTACLE_HEIGHT = 0.5
SPAWN_CLEARANCE = 0.15  # start and goal cells keep this much extra distance to any obstacle or wall
FLOOR_RGBA = (0.85, 0.85, 0.8, 1.0)
FLOOR_FILL = np.array([202, 202, 191], np.uint8)  # FLOOR_RGBA as TinyRenderer shades the (horizontal) floor
HIDDEN = (0.0, 0.0, -1000.0)  # where the floor waits while the egocentric camera renders
EGO_HEIGHT, EGO_PITCH = ROBOT_HEIGHT + 0.05, 0.1  # camera height (m) and downward slope of its axis
BISECTIONS = 8  # a blocked move is shortened to within 2**-8 of its length from the contact point


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise RLKitError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
    return value


def _positive(name: str, value: float, allow_zero: bool = False) -> float:
    if not (value > 0 or (allow_zero and value == 0)) or not math.isfinite(value):
        raise RLKitError(f"{name} must be {'>= 0' if allow_zero else '> 0'}; got {value!r}.")
    return float(value)


def _yaw_quat(yaw: float) -> tuple[float, float, float, float]:
    return (0.0, 0.0, math.sin(yaw / 2.0), math.cos(yaw / 2.0))


class NavigationEnv(gym.Env):
    """Drive a differential-drive robot (a cylinder) to a goal in a walled arena with seeded obstacles.

    Motion is kinematic (unicycle model): each of ``substeps`` substeps moves the robot by the commanded
    velocities and a move that would bring the robot's disc closer than ``robot_radius`` to an obstacle or wall is
    a collision: its component into the surface is removed (the robot slides along it) or, if that is still
    blocked, the move is cut at the contact point (bisection). The footprint test is the exact 2-D distance to the
    same boxes, cylinders and walls that Bullet holds as collision shapes, so the robot never penetrates them;
    Bullet casts the range rays and renders the scene. (Bullet's own dynamics, driven by
    ``resetBaseVelocity``, let the robot sink 0.13-0.19 m into a wall it keeps pushing against, and cost more.)

    Each reset draws a new level from ``self.np_random``: ``num_obstacles`` boxes or cylinders, then a goal and a
    start cell in free space at least ``min_goal_distance`` apart (Euclidean) with a path between them on the
    occupancy grid (cells of ``grid_resolution`` metres, blocked within ``robot_radius`` of an obstacle or wall,
    8-connected, no corner cutting); levels without such a pair are redrawn, so every level is solvable.

    Observations (``obs_type``):
        ``state``: float32 ``[goal_distance / arena_diagonal, sin(bearing), cos(bearing), ray_1..ray_n,
        linear_velocity, angular_velocity]``; rays are ``num_rays`` range readings evenly spread over
        ``ray_fov`` radians (one batched ``rayTestBatch``), each the hit fraction of the segment from the robot's
        surface out to ``ray_length`` metres (1 = nothing hit); velocities are normalised to [-1, 1].
        ``rgb``: uint8 egocentric camera image ``(image_size, image_size, 3)``, camera on the robot's front edge,
        90 degree field of view. Same layout kwargs as the driving env (``rlkit.envs.pixels``): ``grayscale=True``
        gives one luma channel, ``frame_stack=k`` the last k frames on the channel axis, ``channels_first=True``
        ``(C, H, W)`` as rlkit's CNN encoders expect (``rlkit/NavigationRGB-v0`` registers it: ``(3, 84, 84)``).
    Actions (``action_type``):
        ``discrete``: 0 forward, 1 turn left, 2 turn right, 3 forward-left, 4 forward-right (forward-turns at
        half the angular speed). ``continuous``: Box(-1, 1, (2,)) = (linear, angular) velocity as fractions of
        ``max_linear_velocity`` and ``max_angular_velocity``.
    Reward per step: ``progress_scale * (d_prev - d)`` with ``d`` the geodesic (grid distance field, default) or
    Euclidean distance to the goal, ``- step_cost``, ``- collision_penalty`` on a step whose motion was blocked by an
    obstacle or wall, ``+ success_bonus`` on reaching the goal (within ``goal_radius``), which terminates the
    episode. ``terminate_on_collision`` also ends it on a collision.
    Info (every step, so the final step of every episode has the episode's values): ``success``, ``spl``
    (``success * shortest / max(path_length, shortest)``, ``shortest`` = A*-exact 8-connected grid distance from
    the start to the goal centre), ``collisions`` (steps with a blocked move), ``collision`` (this step),
    ``path_length`` (metres driven), ``shortest_path_length``, ``goal_distance`` (Euclidean).

    Args (defaults):
        obs_type: ``"state"`` | ``"rgb"`` (``"state"``).
        action_type: ``"discrete"`` | ``"continuous"`` (``"discrete"``).
        arena_size: side of the square arena in metres (8.0).
        num_obstacles: number of obstacles (8).
        obstacle_size: largest obstacle width/diameter in metres; each is drawn in [0.6, 1] x this (1.0).
        min_goal_distance: least Euclidean start-goal distance in metres (4.0).
        goal_radius: success when the robot centre is this close to the goal, metres (0.4).
        robot_radius: robot (cylinder) radius in metres, also the planner's inflation (0.2).
        num_rays, ray_fov, ray_length: range rays for ``state`` (16, 2 pi, 4.0 m).
        grid_resolution: occupancy-grid cell size in metres, adjusted to divide ``arena_size`` (0.1).
        max_linear_velocity, max_angular_velocity: m/s and rad/s at command 1 (0.75, 2.0).
        control_dt, substeps: seconds per env step and motion/collision substeps per env step (0.1, 2).
        progress_reward: ``"geodesic"`` | ``"euclidean"`` (``"geodesic"``); progress_scale (1.0).
        step_cost (0.01), success_bonus (10.0), collision_penalty (0.1), terminate_on_collision (False).
        image_size (84), grayscale (False), frame_stack (1), channels_first (False), renderer ``"tiny"`` | ``"egl"``
        (``"tiny"``: TinyRenderer; EGL only on request), render_size for ``render_mode="rgb_array"`` (256), a
        top-down view of the whole arena.
    """

    # episode_metrics: final-step info keys that rlkit's evaluation averages over episodes (eval.json, tables)
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10,
                "episode_metrics": ("success", "spl", "collisions", "path_length", "goal_distance")}

    def __init__(
        self,
        obs_type: str = "state",
        action_type: str = "discrete",
        arena_size: float = 8.0,
        num_obstacles: int = 8,
        obstacle_size: float = 1.0,
        min_goal_distance: float = 4.0,
        goal_radius: float = 0.4,
        robot_radius: float = 0.2,
        num_rays: int = 16,
        ray_fov: float = 2 * math.pi,
        ray_length: float = 4.0,
        grid_resolution: float = 0.1,
        max_linear_velocity: float = 0.75,
        max_angular_velocity: float = 2.0,
        control_dt: float = 0.1,
        substeps: int = 2,
        progress_reward: str = "geodesic",
        progress_scale: float = 1.0,
        step_cost: float = 0.01,
        success_bonus: float = 10.0,
        collision_penalty: float = 0.1,
        terminate_on_collision: bool = False,
        image_size: int = 84,
        grayscale: bool = False,
        frame_stack: int = 1,
        channels_first: bool = False,
        renderer: str = "tiny",
        render_size: int = 256,
        render_mode: str | None = None,
    ) -> None:
        #: every constructor argument but render_mode, resolved (defaults included), e.g. for a run's config
        self.settings: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "render_mode")}
        self.obs_type = _choice("obs_type", obs_type, OBS_TYPES)
        self.action_type = _choice("action_type", action_type, ACTION_TYPES)
        self.progress_reward = _choice("progress_reward", progress_reward, PROGRESS_TYPES)
        self.renderer = _choice("renderer", renderer, RENDERERS)
        if render_mode is not None:
            _choice("render_mode", render_mode, tuple(self.metadata["render_modes"]))
        self.render_mode = render_mode
        self.arena_size = _positive("arena_size", arena_size)
        self.obstacle_size = _positive("obstacle_size", obstacle_size)
        self.min_goal_distance = _positive("min_goal_distance", min_goal_distance, allow_zero=True)
        self.goal_radius = _positive("goal_radius", goal_radius)
        self.robot_radius = _positive("robot_radius", robot_radius)
        self.ray_fov = _positive("ray_fov", ray_fov)
        self.ray_length = _positive("ray_length", ray_length)
        self.max_linear_velocity = _positive("max_linear_velocity", max_linear_velocity)
        self.max_angular_velocity = _positive("max_angular_velocity", max_angular_velocity)
        self.control_dt = _positive("control_dt", control_dt)
        self.progress_scale = float(progress_scale)
        self.step_cost, self.success_bonus = float(step_cost), float(success_bonus)
        self.collision_penalty, self.terminate_on_collision = float(collision_penalty), bool(terminate_on_collision)
        for name, value in (("num_obstacles", num_obstacles), ("num_rays", num_rays),
                            ("substeps", substeps), ("image_size", image_size),
                            ("render_size", render_size)):
            if int(value) != value or value < (0 if name == "num_obstacles" else 1):
                raise RLKitError(f"{name} must be an integer >= {0 if name == 'num_obstacles' else 1}; got {value!r}.")
        self.num_obstacles, self.num_rays = int(num_obstacles), int(num_rays)
        self.substeps = int(substeps)
        self.image_size, self.render_size = int(image_size), int(render_size)
        half = self.arena_size / 2
        usable = self.arena_size - 2 * (self.robot_radius + SPAWN_CLEARANCE)
        if usable <= 0:
            raise RLKitError(
                f"arena_size {self.arena_size} m leaves no room for a robot of radius {self.robot_radius} m; "
                f"need arena_size > {2 * (self.robot_radius + SPAWN_CLEARANCE):.2f} m."
            )
        if self.obstacle_size >= self.arena_size:
            raise RLKitError(f"obstacle_size must be < arena_size ({self.arena_size} m); got {self.obstacle_size}.")
        if self.min_goal_distance >= usable * math.sqrt(2):
            raise RLKitError(
                f"min_goal_distance must be < {usable * math.sqrt(2):.2f} m for arena_size {self.arena_size}; "
                f"got {self.min_goal_distance}."
            )
        if self.ray_length <= self.robot_radius:
            raise RLKitError(f"ray_length must exceed robot_radius ({self.robot_radius}); got {self.ray_length}.")
        self.grid_n = max(2, round(self.arena_size / _positive("grid_resolution", grid_resolution)))
        self.grid_resolution = self.arena_size / self.grid_n
        self._centers = cell_centers(self.grid_n, self.grid_resolution, -half)
        self._diag = self.arena_size * math.sqrt(2)

        self._pixels = PixelLayout(self.image_size, grayscale, frame_stack, channels_first)
        self.grayscale, self.frame_stack, self.channels_first = bool(grayscale), int(frame_stack), bool(channels_first)
        if self.action_type == "discrete":
            self.action_space: gym.Space = gym.spaces.Discrete(len(DISCRETE_ACTIONS))
        else:
            self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        if self.obs_type == "state":
            n = 3 + self.num_rays + 2
            low = np.concatenate([[0.0, -1.0, -1.0], np.zeros(self.num_rays), [-1.0, -1.0]]).astype(np.float32)
            self.observation_space: gym.Space = gym.spaces.Box(low, np.ones(n, np.float32), (n,), np.float32)
        else:
            self.observation_space = self._pixels.space

        offsets = np.linspace(-self.ray_fov / 2, self.ray_fov / 2, self.num_rays, endpoint=self.ray_fov < 2 * math.pi)
        self._ray_offsets = offsets if self.num_rays > 1 else np.zeros(1)
        self._p: bullet_client.BulletClient | None = bullet_client.BulletClient(connection_mode=pb.DIRECT)
        self._render_flag = pb.ER_TINY_RENDERER
        self._egl_plugin = -1
        if self.renderer == "egl":
            egl = pkgutil.get_loader("eglRenderer")
            path = egl.get_filename() if egl is not None else "eglRendererPlugin"
            self._egl_plugin = self._p.loadPlugin(path, "_eglRendererPlugin")
            if self._egl_plugin < 0:
                self._p.disconnect()  # the env will not exist: do not leave its physics client behind
                self._p = None
                raise RLKitError("renderer 'egl' could not load pybullet's EGL plugin; use renderer='tiny'.")
            self._render_flag = pb.ER_BULLET_HARDWARE_OPENGL
        self._ego_proj = pb.computeProjectionMatrixFOV(90.0, 1.0, 0.03, self._diag + 1.0)
        top = 2.0 * self.arena_size
        fov = math.degrees(2 * math.atan((half + WALL_THICKNESS + 0.1) / (top - WALL_HEIGHT)))
        self._top_proj = pb.computeProjectionMatrixFOV(fov, 1.0, 0.1, top + 1.0)
        # image rows whose pixel-centre rays point below the horizon (90 degree vertical field of view)
        rows = (np.arange(self.image_size) + 0.5 - self.image_size / 2) / (self.image_size / 2)
        self._below_horizon = (np.arctan(rows) + math.atan(EGO_PITCH) > 0)[:, None]
        self._top_view = pb.computeViewMatrix((0.0, 0.0, top), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0))
        # level and episode state (set by reset)
        self.obstacles: list[Obstacle] = []
        self.free_grid = np.zeros((self.grid_n, self.grid_n), dtype=bool)
        self.goal_field = np.full((self.grid_n, self.grid_n), np.inf)
        self.goal_position = np.zeros(2)
        self.start_position = np.zeros(2)
        self.position = np.zeros(2)
        self.yaw = 0.0
        self.shortest_path_length = 0.0
        self._robot = -1
        self._reset_episode_stats()

    # ---------------------------------------------------------------- level generation
    def cell_of(self, xy: np.ndarray) -> tuple[int, int]:
        """Grid cell containing world point ``xy`` (clamped to the grid)."""
        ij = np.floor((np.asarray(xy) + self.arena_size / 2) / self.grid_resolution).astype(int)
        ij = np.clip(ij, 0, self.grid_n - 1)
        return int(ij[0]), int(ij[1])

    def _sample_obstacle(self) -> Obstacle:
        rng = self.np_random
        kind = "box" if rng.random() < 0.5 else "cylinder"
        width = self.obstacle_size * rng.uniform(0.6, 1.0)
        depth = self.obstacle_size * rng.uniform(0.3, 1.0) if kind == "box" else width
        lim = self.arena_size / 2 - width / 2
        x, y = rng.uniform(-lim, lim, size=2)
        yaw = rng.uniform(0.0, math.pi) if kind == "box" else 0.0
        return Obstacle(kind, float(x), float(y), width / 2, depth / 2, float(yaw))

    def _generate_level(self) -> None:
        rng, n = self.np_random, self.grid_n
        for _ in range(200):
            obstacles = [self._sample_obstacle() for _ in range(self.num_obstacles)]
            sdf = signed_distance(self._centers, obstacles, self.arena_size / 2)
            free = sdf >= self.robot_radius
            spawn = np.flatnonzero(sdf >= self.robot_radius + SPAWN_CLEARANCE)
            if len(spawn) < 2:
                continue
            for _ in range(5):
                goal = np.unravel_index(int(spawn[rng.integers(len(spawn))]), (n, n))
                field = distance_field(free, (int(goal[0]), int(goal[1])), self.grid_resolution)
                euclid = np.linalg.norm(self._centers.reshape(-1, 2)[spawn] - self._centers[goal], axis=1)
                ok = spawn[np.isfinite(field.reshape(-1)[spawn]) & (euclid >= self.min_goal_distance)]
                if len(ok):
                    start = np.unravel_index(int(ok[rng.integers(len(ok))]), (n, n))
                    self.obstacles, self.free_grid, self.goal_field = obstacles, free, field
                    self.goal_position = self._centers[goal].copy()
                    self.start_position = self._centers[start].copy()
                    self.shortest_path_length = float(field[start])
                    return
        raise RLKitError(
            "could not generate a solvable level in 200 tries; lower num_obstacles, obstacle_size or "
            "min_goal_distance, or enlarge arena_size."
        )

    # ---------------------------------------------------------------- scene
    def _build_scene(self) -> None:
        p = self._p
        assert p is not None
        p.resetSimulation()
        half, t = self.arena_size / 2, WALL_THICKNESS
        # The floor costs 60% of an egocentric frame in TinyRenderer (pixel fill), so it only joins the scene for
        # render(); egocentric frames paint empty pixels below the horizon in its colour instead (same look).
        floor = p.createVisualShape(pb.GEOM_BOX, halfExtents=[half + t, half + t, 0.01], rgbaColor=FLOOR_RGBA)
        self._floor = p.createMultiBody(0, -1, floor, HIDDEN)
        for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            ext = [t / 2, half + t, WALL_HEIGHT / 2] if sx else [half + t, t / 2, WALL_HEIGHT / 2]
            col = p.createCollisionShape(pb.GEOM_BOX, halfExtents=ext)
            vis = p.createVisualShape(pb.GEOM_BOX, halfExtents=ext, rgbaColor=[0.45, 0.45, 0.5, 1])
            p.createMultiBody(0, col, vis, [sx * (half + t / 2), sy * (half + t / 2), WALL_HEIGHT / 2])
        for ob in self.obstacles:
            pos, orn = [ob.x, ob.y, OBSTACLE_HEIGHT / 2], _yaw_quat(ob.yaw)
            if ob.kind == "box":
                ext = [ob.hx, ob.hy, OBSTACLE_HEIGHT / 2]
                col = p.createCollisionShape(pb.GEOM_BOX, halfExtents=ext)
                vis = p.createVisualShape(pb.GEOM_BOX, halfExtents=ext, rgbaColor=[0.6, 0.4, 0.2, 1])
            else:
                col = p.createCollisionShape(pb.GEOM_CYLINDER, radius=ob.hx, height=OBSTACLE_HEIGHT)
                vis = p.createVisualShape(pb.GEOM_CYLINDER, radius=ob.hx, length=OBSTACLE_HEIGHT,
                                          rgbaColor=[0.2, 0.4, 0.8, 1])
            p.createMultiBody(0, col, vis, pos, orn)
        gx, gy = self.goal_position
        goal_vis = p.createVisualShapeArray(
            shapeTypes=[pb.GEOM_CYLINDER, pb.GEOM_CYLINDER], radii=[self.goal_radius, 0.08], lengths=[0.01, 1.0],
            visualFramePositions=[[0, 0, 0.005], [0, 0, 0.5]], rgbaColors=[[0.2, 0.8, 0.2, 1], [0.1, 0.9, 0.1, 1]],
        )
        p.createMultiBody(0, -1, goal_vis, [gx, gy, 0.0])  # visual only: no collision, rays pass through
        r = self.robot_radius
        vis = p.createVisualShapeArray(
            shapeTypes=[pb.GEOM_CYLINDER, pb.GEOM_BOX], radii=[r, 0], lengths=[ROBOT_HEIGHT, 0],
            halfExtents=[[0, 0, 0], [r * 0.4, r * 0.15, 0.02]],
            visualFramePositions=[[0, 0, 0], [r * 0.55, 0, ROBOT_HEIGHT / 2 + 0.02]],
            rgbaColors=[[0.95, 0.55, 0.1, 1], [0.1, 0.1, 0.1, 1]],
        )
        x, y = self.start_position
        # visual only: the robot moves kinematically (see _drive) and its own rays must not hit it
        self._robot = p.createMultiBody(0, -1, vis, [x, y, ROBOT_HEIGHT / 2], _yaw_quat(self.yaw))

    # ---------------------------------------------------------------- episode
    def _reset_episode_stats(self) -> None:
        self.collisions, self.path_length, self.success, self.steps = 0, 0.0, False, 0
        self._lin, self._ang = 0.0, 0.0

    def _progress_distance(self, xy: np.ndarray) -> float:
        """Distance to the goal used by the progress reward: geodesic (grid field) or Euclidean."""
        if self.progress_reward == "euclidean":
            return float(np.linalg.norm(self.goal_position - xy))
        i, j = self.cell_of(xy)
        lo_i, lo_j = max(0, i - 2), max(0, j - 2)
        field = self.goal_field[lo_i : i + 3, lo_j : j + 3]
        centers = self._centers[lo_i : i + 3, lo_j : j + 3]
        d = field + np.linalg.norm(centers - xy, axis=-1)
        best = float(d.min())
        return best if math.isfinite(best) else self._last_distance

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if self._p is None:
            raise RLKitError("the env is closed; make a new one.")
        self._generate_level()
        self.yaw = float(self.np_random.uniform(-math.pi, math.pi))
        self._build_scene()
        self.position = self.start_position.copy()
        self._reset_episode_stats()
        self._last_distance = math.inf
        self._last_distance = self._progress_distance(self.position)
        return self._observation(reset=True), self._info(False)

    def _command(self, action: Any) -> tuple[float, float]:
        if self.action_type == "discrete":
            if not self.action_space.contains(action):
                raise RLKitError(f"action must be an integer in [0, {len(DISCRETE_ACTIONS)}); got {action!r}.")
            lin, ang = DISCRETE_ACTIONS[int(action)]
        else:
            lin, ang = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        return float(lin), float(ang)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        p = self._p
        if p is None or self._robot < 0:
            raise RLKitError("call reset() before step().")
        lin, ang = self._command(action)
        v, w = lin * self.max_linear_velocity, ang * self.max_angular_velocity
        old = self.position
        x, y, collision = self._drive(float(old[0]), float(old[1]), v, w)
        self.yaw = (self.yaw + w * self.control_dt + math.pi) % (2 * math.pi) - math.pi
        p.resetBasePositionAndOrientation(self._robot, [x, y, ROBOT_HEIGHT / 2], _yaw_quat(self.yaw))
        self.position = np.array([x, y])
        moved = self.position - old
        self.path_length += float(np.hypot(moved[0], moved[1]))
        forward = moved[0] * math.cos(self.yaw) + moved[1] * math.sin(self.yaw)
        self._lin = float(np.clip(forward / (self.control_dt * self.max_linear_velocity), -1.0, 1.0))
        self._ang = ang
        self.steps += 1

        distance = self._progress_distance(self.position)
        reward = self.progress_scale * (self._last_distance - distance) - self.step_cost
        self._last_distance = distance
        if collision:
            self.collisions += 1
            reward -= self.collision_penalty
        self.success = bool(np.linalg.norm(self.goal_position - self.position) <= self.goal_radius)
        if self.success:
            reward += self.success_bonus
        terminated = self.success or (collision and self.terminate_on_collision)
        return self._observation(), float(reward), bool(terminated), False, self._info(collision)

    def _clearance(self, x: float, y: float) -> float:
        return point_clearance(x, y, self.obstacles, self.arena_size / 2)

    def _drive(self, x: float, y: float, v: float, w: float) -> tuple[float, float, bool]:
        """Integrate the unicycle over one control step with slide-or-stop collision handling."""
        h, r, collision = self.control_dt / self.substeps, self.robot_radius, False
        for k in range(self.substeps):
            heading = self.yaw + w * h * (k + 0.5)
            mx, my = v * h * math.cos(heading), v * h * math.sin(heading)
            if mx == 0.0 and my == 0.0:
                continue
            if self._clearance(x + mx, y + my) >= r:
                x, y = x + mx, y + my
                continue
            collision = True
            eps = 1e-5  # surface normal = gradient of the clearance at the current position
            nx = self._clearance(x + eps, y) - self._clearance(x - eps, y)
            ny = self._clearance(x, y + eps) - self._clearance(x, y - eps)
            norm = math.hypot(nx, ny)
            if norm > 0:
                nx, ny = nx / norm, ny / norm
                into = min(0.0, mx * nx + my * ny)
                sx, sy = mx - into * nx, my - into * ny
                if self._clearance(x + sx, y + sy) >= r:
                    x, y = x + sx, y + sy
                    continue
            lo, hi = 0.0, 1.0  # cut the move at the contact point
            for _ in range(BISECTIONS):
                mid = (lo + hi) / 2
                if self._clearance(x + mid * mx, y + mid * my) >= r:
                    lo = mid
                else:
                    hi = mid
            x, y = x + lo * mx, y + lo * my
        return x, y, collision

    @property
    def spl(self) -> float:
        """Success weighted by path length for the episode so far."""
        if not self.success:
            return 0.0
        return self.shortest_path_length / max(self.path_length, self.shortest_path_length, 1e-9)

    def ground_truth(self) -> dict[str, float]:
        """Privileged state of the current frame, egocentric (frame-dataset labels; see ``rlkit.vision.labels``).

        ``goal_distance`` (Euclidean, m) and ``goal_path_distance`` (geodesic on the occupancy grid, m; inf if
        the robot's neighbourhood has no path) from the robot centre to the goal; ``goal_bearing`` (rad, in
        [-pi, pi), positive = goal to the left of the heading); ``obstacle_range``: distance (m) from the robot's
        surface to the nearest obstacle or wall; ``front_range``, ``left_range``, ``right_range``: distance (m)
        from the robot centre to the first obstacle or wall along the heading and +-45 degrees (the camera's
        field of view), cast at half the robot's height, ``ray_length`` when nothing is hit. Reads only.
        """
        if self._p is None or self._robot < 0:
            raise RLKitError("call reset() before ground_truth().")
        x, y = float(self.position[0]), float(self.position[1])
        dx, dy = self.goal_position - self.position
        bearing = (math.atan2(dy, dx) - self.yaw + math.pi) % (2 * math.pi) - math.pi
        i, j = self.cell_of(self.position)
        lo_i, lo_j = max(0, i - 2), max(0, j - 2)
        near = self.goal_field[lo_i : i + 3, lo_j : j + 3]
        path = near + np.linalg.norm(self._centers[lo_i : i + 3, lo_j : j + 3] - self.position, axis=-1)
        angles = self.yaw + np.array([0.0, math.pi / 4, -math.pi / 4])
        z = ROBOT_HEIGHT / 2
        starts = [[x, y, z]] * 3
        ends = [[x + self.ray_length * math.cos(a), y + self.ray_length * math.sin(a), z] for a in angles]
        hits = self._p.rayTestBatch(starts, ends, numThreads=1)
        front, left, right = (self.ray_length * (hit[2] if hit[0] >= 0 else 1.0) for hit in hits)
        return {
            "goal_distance": float(math.hypot(dx, dy)),
            "goal_path_distance": float(path.min()),
            "goal_bearing": float(bearing),
            "obstacle_range": max(0.0, self._clearance(x, y) - self.robot_radius),
            "front_range": float(front),
            "left_range": float(left),
            "right_range": float(right),
        }

    def _info(self, collision: bool) -> dict:
        return {
            "success": self.success,
            "spl": self.spl,
            "collisions": self.collisions,
            "collision": collision,
            "path_length": self.path_length,
            "shortest_path_length": self.shortest_path_length,
            "goal_distance": float(np.linalg.norm(self.goal_position - self.position)),
        }

    # ---------------------------------------------------------------- observations and rendering
    def _observation(self, reset: bool = False) -> np.ndarray:
        if self.obs_type == "rgb":
            return self._pixels.observe(self._ego_image(), reset=reset)
        x, y = self.position
        dx, dy = self.goal_position - self.position
        bearing = math.atan2(dy, dx) - self.yaw
        angles = self.yaw + self._ray_offsets
        dirs = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
        origin = np.array([x, y, ROBOT_HEIGHT / 2])
        starts = origin + dirs * (self.robot_radius + 0.01)
        ends = origin + dirs * self.ray_length
        hits = self._p.rayTestBatch(starts.tolist(), ends.tolist(), numThreads=1)
        rays = [hit[2] for hit in hits]
        dist = min(math.hypot(dx, dy) / self._diag, 1.0)
        obs = [dist, math.sin(bearing), math.cos(bearing), *rays, self._lin, self._ang]
        return np.asarray(obs, dtype=np.float32)

    def _camera(self, width: int, height: int, view: list, proj: list) -> tuple[np.ndarray, np.ndarray]:
        _, _, rgba, depth, _ = self._p.getCameraImage(width, height, view, proj, renderer=self._render_flag,
                                                      shadow=0, flags=pb.ER_NO_SEGMENTATION_MASK)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3]
        return np.ascontiguousarray(rgb), np.asarray(depth).reshape(height, width)

    def _ego_image(self) -> np.ndarray:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        eye_xy = self.position + (self.robot_radius + 0.02) * np.array([c, s])
        eye = [eye_xy[0], eye_xy[1], EGO_HEIGHT]
        view = self._p.computeViewMatrix(eye, [eye[0] + c, eye[1] + s, eye[2] - EGO_PITCH], [0, 0, 1])
        img, depth = self._camera(self.image_size, self.image_size, view, self._ego_proj)
        img[(depth >= 1.0) & self._below_horizon] = FLOOR_FILL  # nothing drawn there: it is floor
        return img  # (size, size, 3); PixelLayout gives the observation layout

    def render(self) -> np.ndarray | None:
        """Top-down view of the arena (``render_mode="rgb_array"``)."""
        if self.render_mode != "rgb_array" or self._p is None:
            return None
        self._p.resetBasePositionAndOrientation(self._floor, [0.0, 0.0, -0.01], [0, 0, 0, 1])
        frame = self._camera(self.render_size, self.render_size, self._top_view, self._top_proj)[0]
        self._p.resetBasePositionAndOrientation(self._floor, HIDDEN, [0, 0, 0, 1])
        return frame

    def close(self) -> None:
        if self._p is not None:
            if self._egl_plugin >= 0:
                self._p.unloadPlugin(self._egl_plugin)
            self._p.disconnect()
            self._p = None


class NavigationExpert:
    """Privileged baseline: A* on the level's occupancy grid, then pure pursuit along the path.

    The planner inflates obstacles by ``robot_radius + margin`` (falling back to smaller margins where that
    closes the way) so the follower keeps clear of corners; the path is re-planned whenever a new episode
    starts. ``act`` returns an env action for either action type. Raises ``RuntimeError`` on an unsolvable
    level, so running it over many seeds validates the level generator.
    """

    def __init__(self, env: gym.Env, lookahead: float = 0.5, margin: float = 0.15) -> None:
        unwrapped = env.unwrapped
        if not isinstance(unwrapped, NavigationEnv):
            raise RLKitError(f"NavigationExpert needs a NavigationEnv, got {type(unwrapped).__name__}.")
        self.env: NavigationEnv = unwrapped
        self.lookahead, self.margin = float(lookahead), float(margin)
        self.path = np.zeros((0, 2))
        self.path_cells_length = math.inf
        self._level: list[Obstacle] | None = None
        self._index = 0

    def plan(self) -> np.ndarray:
        """A* path (world points) from the robot to the goal; also sets ``path_cells_length``."""
        e = self.env
        sdf = signed_distance(e._centers, e.obstacles, e.arena_size / 2)
        start, goal = e.cell_of(e.position), e.cell_of(e.goal_position)
        for margin in (self.margin, self.margin / 2, 0.0):
            cells, length = astar(sdf >= e.robot_radius + margin, start, goal, e.grid_resolution)
            if cells:
                break
        else:
            raise RuntimeError("NavigationExpert: no path from start to goal (unsolvable level).")
        points = e._centers[tuple(np.asarray(cells).T)]
        points[0], points[-1] = e.position, e.goal_position
        self.path, self.path_cells_length, self._index, self._level = points, length, 0, e.obstacles
        return points

    def act(self, observation: Any = None) -> np.ndarray | int:
        """The expert's action for the env's current state (the observation is not needed)."""
        e = self.env
        if e.steps == 0 or self._level is not e.obstacles:
            self.plan()
        window = self.path[self._index : self._index + 30]
        self._index += int(np.argmin(np.linalg.norm(window - e.position, axis=1)))
        rest = self.path[self._index :]
        far = np.flatnonzero(np.linalg.norm(rest - e.position, axis=1) >= self.lookahead)
        target = rest[far[0]] if len(far) else rest[-1]
        dx, dy = target - e.position
        alpha = (math.atan2(dy, dx) - e.yaw + math.pi) % (2 * math.pi) - math.pi
        if e.action_type == "discrete":
            if abs(alpha) > 0.6:
                return 1 if alpha > 0 else 2
            if abs(alpha) > 0.15:
                return 3 if alpha > 0 else 4
            return 0
        if abs(alpha) > 0.8:
            return np.array([0.0, math.copysign(1.0, alpha)], dtype=np.float32)
        # pure pursuit: curvature 2 sin(alpha) / lookahead at full speed
        omega = e.max_linear_velocity * 2.0 * math.sin(alpha) / self.lookahead
        return np.array([1.0, np.clip(omega / e.max_angular_velocity, -1.0, 1.0)], dtype=np.float32)


def run_expert(
    env_id: str = "rlkit/Navigation-v0", episodes: int = 10, seed: int = 0, **env_kwargs: Any
) -> dict[str, float]:
    """Run ``NavigationExpert`` for ``episodes`` episodes; success rate, mean SPL, collisions, path length."""
    env = gym.make(env_id, **env_kwargs)
    expert = NavigationExpert(env)
    finals = []
    try:
        for k in range(episodes):
            obs, info = env.reset(seed=seed if k == 0 else None)
            done = False
            while not done:
                obs, _, terminated, truncated, info = env.step(expert.act(obs))
                done = terminated or truncated
            finals.append(info)
    finally:
        env.close()
    return {
        "episodes": float(episodes),
        "success_rate": float(np.mean([f["success"] for f in finals])),
        "mean_spl": float(np.mean([f["spl"] for f in finals])),
        "mean_collisions": float(np.mean([f["collisions"] for f in finals])),
        "mean_path_length": float(np.mean([f["path_length"] for f in finals])),
    }
