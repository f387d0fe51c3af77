"""Synthetic camera images of the simulated scene (no rclpy): a table, a task object, both arms and hands,
seen from the head camera and from each wrist, so recorded images carry the task's information.

The kinematics are a picture-grade approximation of the H1-2 arm (shoulders 0.2 m either side of the torso,
0.3 m upper arm, 0.3 m forearm, joint order of robot_model.ARM_JOINT_NAMES) -- enough to see where the hands
are relative to the object, not a replacement for the URDF. Frame: x forward, y left, z up, origin between
the shoulders.

Cheap by construction: static parts are rendered once per camera into a background, each frame draws a few
primitives on a copy, and a frame is JPEG-encoded only when the scene changed since the last one (an
unchanged scene resends the previous JPEG).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from h1_training.robot_model import ARM_HOME_RAD

SHOULDER_Y = 0.2
UPPER_ARM = 0.3
FOREARM = 0.3
HAND = 0.1
TABLE_Z = -0.10  # table top below the shoulders [m]: a counter the reach pose works over
TABLE_X = (0.3, 0.9)
TABLE_Y = (-0.55, 0.55)
OBJECT_RADIUS = 0.04


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


@dataclass
class ArmPose:
    shoulder: np.ndarray
    elbow: np.ndarray
    wrist: np.ndarray
    tip: np.ndarray  # hand center, where a grasped object sits
    wrist_rot: np.ndarray  # wrist frame: columns x, y, z (z along the hand)


def arm_fk(q7: np.ndarray, side: str) -> ArmPose:
    """Approximate forward kinematics of one arm (q7 in robot_model joint order, hanging down at zero)."""
    sign = 1.0 if side == "left" else -1.0
    shoulder = np.array([0.0, sign * SHOULDER_Y, 0.0])
    r_sh = rot_y(q7[0]) @ rot_x(q7[1]) @ rot_z(q7[2])  # negative pitch lifts the arm forward
    down = np.array([0.0, 0.0, -1.0])
    elbow = shoulder + r_sh @ down * UPPER_ARM
    r_el = r_sh @ rot_y(-q7[3]) @ rot_z(q7[4])  # elbow flexion brings the forearm forward/up
    wrist = elbow + r_el @ down * FOREARM
    r_wr = r_el @ rot_y(-q7[5]) @ rot_x(q7[6])
    tip = wrist + r_wr @ down * HAND
    # camera-style frame at the wrist: z along the hand, x to the robot's side, y completes it
    z = r_wr @ down
    x = r_wr @ np.array([0.0, sign * 1.0, 0.0])
    y = np.cross(z, x)
    return ArmPose(shoulder, elbow, wrist, tip, np.column_stack([x, y, z]))


@dataclass
class SceneState:
    arm_q: np.ndarray = field(default_factory=lambda: ARM_HOME_RAD.copy())  # 14 joints [rad]
    hand_open: np.ndarray = field(default_factory=lambda: np.ones(12))  # 0..1, 1 = open (NaN: unknown)
    object_xyz: np.ndarray = field(default_factory=lambda: np.array([0.55, 0.0, TABLE_Z + OBJECT_RADIUS]))

    def key(self) -> tuple:
        """What the picture depends on, quantized: equal keys give the same image (no re-encode)."""
        hands = np.where(np.isfinite(self.hand_open), self.hand_open, -1.0)
        return (
            tuple(np.round(self.arm_q / 0.005).astype(int)),
            tuple(np.round(hands / 0.02).astype(int)),
            tuple(np.round(self.object_xyz / 0.002).astype(int)),
        )


class PinholeCamera:
    def __init__(self, width: int, height: int, fov_deg: float) -> None:
        self.width, self.height = width, height
        self.f = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
        self.cx, self.cy = width / 2.0, height / 2.0

    def project(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points in the camera frame (x right, y down, z forward) -> pixels, and which are in front."""
        pts = np.atleast_2d(points_cam)
        front = pts[:, 2] > 0.02
        z = np.where(front, pts[:, 2], 1.0)
        uv = np.column_stack([self.f * pts[:, 0] / z + self.cx, self.f * pts[:, 1] / z + self.cy])
        return uv, front


def clip_near(poly_cam: np.ndarray, near: float = 0.03) -> np.ndarray:
    """Clip a convex polygon (camera frame) to z >= near (Sutherland-Hodgman), so a table that reaches
    behind a wrist camera is still drawn where it is in view."""
    out = []
    n = len(poly_cam)
    for k in range(n):
        a, b = poly_cam[k], poly_cam[(k + 1) % n]
        a_in, b_in = a[2] >= near, b[2] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


def look_rotation(forward: np.ndarray, up_hint: np.ndarray = np.array([0.0, 0.0, 1.0])) -> np.ndarray:
    """World-from-camera rotation for a camera looking along ``forward`` (camera y points down)."""
    z = forward / np.linalg.norm(forward)
    x = np.cross(z, up_hint)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, np.array([1.0, 0.0, 0.0]))
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return np.column_stack([x, y, z])


class SceneRenderer:
    """Renders one camera's view of a SceneState; ``camera`` is ego_cam, cam_left_wrist or cam_right_wrist."""

    HEAD_POS = np.array([0.08, 0.0, 0.35])

    def __init__(self, camera: str, width: int = 640, height: int = 480, quality: int = 85,
                 texture: bool = True) -> None:
        import cv2

        self.cv2 = cv2
        self.camera, self.width, self.height, self.quality = camera, width, height, quality
        self.texture = texture
        self.scale = width / 640.0
        if camera == "ego_cam":
            self.cam = PinholeCamera(width, height, 90.0)
            self.head_rot = look_rotation(np.array([np.cos(0.75), 0.0, -np.sin(0.75)]))  # 43 deg down
        else:
            self.cam = PinholeCamera(width, height, 87.0)  # D405 color horizontal FOV
            self.side = "left" if camera == "cam_left_wrist" else "right"
        self.background = self._background()
        self._canvas = self.background.copy()
        self._last_key: tuple | None = None
        self._last_jpeg: bytes = b""
        self.encodes = 0

    # --- static parts ---
    def _background(self) -> np.ndarray:
        cv2 = self.cv2
        h, w = self.height, self.width
        img = np.empty((h, w, 3), np.uint8)
        ramp = np.linspace(90, 40, h, dtype=np.float32)[:, None]  # wall/floor gradient
        img[:] = np.stack([ramp * 1.0, ramp * 0.95, ramp * 0.9], axis=-1).astype(np.uint8)
        if self.camera == "ego_cam":
            self._draw_table(img, self._to_cam_head)
        if self.texture:
            img = self._textured(img)
        cv2.putText(img, f"SIM {self.camera}", (int(10 * self.scale), int(24 * self.scale)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.6 * self.scale, (255, 255, 255), 1, cv2.LINE_AA)
        return img

    def _textured(self, img: np.ndarray) -> np.ndarray:
        """Surface texture (low-frequency blotches) and sensor noise (sigma 5 levels), fixed per camera: a flat
        shaded view compresses to ~15 kB, a real 640x480 camera's JPEG at quality 85 is 40-60 kB, and the
        recorder's write load and file size follow the bytes (issue 16)."""
        cv2 = self.cv2
        h, w = img.shape[:2]
        rng = np.random.default_rng(sum(self.camera.encode()))
        blotches = cv2.resize(rng.normal(0.0, 18.0, (max(2, h // 20), max(2, w // 20), 3)).astype(np.float32),
                              (w, h), interpolation=cv2.INTER_CUBIC)
        noise = rng.normal(0.0, 5.0, img.shape).astype(np.float32)
        return np.clip(img.astype(np.float32) + blotches + noise, 0, 255).astype(np.uint8)

    def _to_cam_head(self, p_world: np.ndarray) -> np.ndarray:
        return (np.atleast_2d(p_world) - self.HEAD_POS) @ self.head_rot

    def _draw_table(self, img: np.ndarray, to_cam) -> None:
        cv2 = self.cv2
        corners = np.array([[x, y, TABLE_Z] for x, y in
                            ((TABLE_X[0], TABLE_Y[0]), (TABLE_X[1], TABLE_Y[0]), (TABLE_X[1], TABLE_Y[1]),
                             (TABLE_X[0], TABLE_Y[1]))])
        poly = clip_near(to_cam(corners))
        if len(poly) >= 3:
            uv, _ = self.cam.project(poly)
            cv2.fillConvexPoly(img, np.round(uv).astype(np.int32), (105, 135, 160), cv2.LINE_AA)
            for k in range(1, 6):  # a few grid lines give depth
                x = TABLE_X[0] + (TABLE_X[1] - TABLE_X[0]) * k / 6
                seg, ok = self.cam.project(to_cam(np.array([[x, TABLE_Y[0], TABLE_Z], [x, TABLE_Y[1], TABLE_Z]])))
                if ok.all():
                    cv2.line(img, tuple(np.round(seg[0]).astype(int)), tuple(np.round(seg[1]).astype(int)),
                             (95, 120, 145), 1, cv2.LINE_AA)

    # --- per frame ---
    def render(self, state: SceneState, key: tuple | None = None) -> bytes:
        """JPEG of the current view; re-encoded only when the scene changed (``key``: ``state.key()``)."""
        key = state.key() if key is None else key
        if key == self._last_key and self._last_jpeg:
            return self._last_jpeg
        img = self._canvas
        np.copyto(img, self.background)
        if self.camera == "ego_cam":
            self._draw_head(img, state)
        else:
            self._draw_wrist(img, state)
        ok, buf = self.cv2.imencode(".jpg", img, [self.cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        self.encodes += 1
        self._last_key, self._last_jpeg = key, buf.tobytes()
        return self._last_jpeg

    def _pt(self, uv: np.ndarray) -> tuple[int, int]:
        return int(round(float(uv[0]))), int(round(float(uv[1])))

    def _draw_object(self, img: np.ndarray, state: SceneState, to_cam) -> None:
        cv2 = self.cv2
        center = to_cam(state.object_xyz)[0]
        uv, front = self.cam.project(center)
        if front[0]:
            radius = max(2, int(self.cam.f * OBJECT_RADIUS / center[2]))
            cv2.circle(img, self._pt(uv[0]), radius, (40, 60, 220), -1, cv2.LINE_AA)
            cv2.circle(img, self._pt(uv[0]), radius, (20, 30, 120), max(1, radius // 8), cv2.LINE_AA)

    def _draw_head(self, img: np.ndarray, state: SceneState) -> None:
        cv2 = self.cv2
        self._draw_object(img, state, self._to_cam_head)
        for i, side in enumerate(("left", "right")):
            pose = arm_fk(state.arm_q[7 * i:7 * i + 7], side)
            pts = np.vstack([pose.shoulder, pose.elbow, pose.wrist, pose.tip])
            uv, front = self.cam.project(self._to_cam_head(pts))
            color = (200, 200, 200) if side == "left" else (170, 190, 210)
            for a, b, thick in ((0, 1, 14), (1, 2, 11)):
                if front[a] and front[b]:
                    cv2.line(img, self._pt(uv[a]), self._pt(uv[b]), color, max(1, int(thick * self.scale)),
                             cv2.LINE_AA)
            if front[2] and front[3]:
                openness = state.hand_open[6 * i:6 * i + 6]
                self._draw_hand(img, uv[2], uv[3], openness)

    def _draw_hand(self, img: np.ndarray, wrist_uv: np.ndarray, tip_uv: np.ndarray, openness: np.ndarray) -> None:
        """Palm at the wrist, five finger strokes fanning out by how open each finger is (grey if unknown)."""
        cv2 = self.cv2
        d = tip_uv - wrist_uv
        length = max(8.0, float(np.linalg.norm(d)))
        base_angle = float(np.arctan2(d[1], d[0]))
        palm = self._pt(wrist_uv + 0.4 * d)
        cv2.circle(img, palm, max(3, int(0.25 * length)), (150, 170, 190), -1, cv2.LINE_AA)
        # fingers: pinky, ring, middle, index spread across the palm; the thumb from the side
        for k, spread in enumerate((-0.5, -0.17, 0.17, 0.5, 1.1)):
            o = openness[k] if k < 4 else openness[4]
            if not np.isfinite(o):
                color, o = (128, 128, 128), 0.5
            else:
                color = (60, int(120 + 120 * o), int(240 - 150 * o))  # green open -> orange closed
            angle = base_angle + spread * (0.4 + 0.6 * o)
            reach = length * (0.35 + 0.5 * o)
            end = (palm[0] + int(reach * np.cos(angle)), palm[1] + int(reach * np.sin(angle)))
            cv2.line(img, palm, end, color, max(2, int(4 * self.scale)), cv2.LINE_AA)

    def _draw_wrist(self, img: np.ndarray, state: SceneState) -> None:
        cv2 = self.cv2
        i = 0 if self.side == "left" else 1
        pose = arm_fk(state.arm_q[7 * i:7 * i + 7], self.side)
        # the D405 sits on the back of the wrist looking past the fingers, tilted toward the work surface
        cam_pos = pose.wrist + np.array([0.0, 0.0, 0.05])
        rot = look_rotation(pose.wrist_rot[:, 2] + np.array([0.0, 0.0, -0.7]))

        def to_cam(p: np.ndarray) -> np.ndarray:
            return (np.atleast_2d(p) - cam_pos) @ rot

        self._draw_table(img, to_cam)
        self._draw_object(img, state, to_cam)
        # the hand itself at the bottom of the view, fingers by openness
        h, w = self.height, self.width
        openness = state.hand_open[6 * i:6 * i + 6]
        wrist_uv = np.array([w / 2.0, h * 1.05])
        tip_uv = np.array([w / 2.0, h * 0.62])
        self._draw_hand(img, wrist_uv, tip_uv, openness)
        dist = float(np.linalg.norm(state.object_xyz - pose.tip))
        cv2.putText(img, f"object {dist * 100:.0f} cm", (int(10 * self.scale), int(48 * self.scale)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.55 * self.scale, (230, 230, 230), 1, cv2.LINE_AA)
