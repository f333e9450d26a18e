"""Registration of a live camera frame to a reference view.

The head camera moves while the robot acts, so a live frame has to be brought into the coordinates of the start
view before it can be compared pixel by pixel. Two methods, tried in this order by default:

- ``features``: ORB keypoints on a small grey image, ratio-test matches, RANSAC homography. Handles large motion
  in textured scenes.
- ``ecc``: dense intensity alignment (OpenCV's enhanced correlation coefficient, affine, coarse to fine from a
  phase-correlation shift). Works in scenes with too little texture for keypoints, and its correlation
  coefficient says how well the aligned frame matches.

Every estimate is checked for sanity (enough inliers / correlation, a plausible scale, a convex footprint that
overlaps the reference); a frame that fails is reported as not registered instead of being warped into nonsense.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Registration:
    """Outcome of registering one frame.

    ``homography`` maps pixel coordinates of the registered frame (at the registrar's resolution) to the
    reference's; it is ``None`` when ``ok`` is False, and ``reason`` then says which check failed.
    """

    ok: bool
    homography: np.ndarray | None
    inliers: int
    matches: int
    reason: str = ""
    method: str = ""
    correlation: float = float("nan")


def _failed(method: str, reason: str, inliers: int = 0, matches: int = 0,
            correlation: float = float("nan")) -> Registration:
    return Registration(False, None, inliers, matches, reason, method, float(correlation))


class FrameRegistrar:
    """Registers grey frames to one or more reference views that share a common base frame.

    References are tried in order; each comes with the homography from its own pixels to the base frame (identity
    for the base itself), so a frame that only matches the second reference (e.g. the goal view, late in the action)
    is still mapped into base (start) coordinates.

    Args:
        method: "auto" (features, then ECC when features fail), "features" or "ecc".
        max_features: ORB keypoints per image.
        ratio: Lowe ratio test threshold for the two nearest descriptor matches.
        min_inliers: fewest RANSAC inliers accepted.
        min_inlier_ratio: fewest inliers as a fraction of ratio-test matches.
        ransac_threshold: RANSAC reprojection threshold in pixels at the registrar's resolution.
        ecc_width: width in pixels of the finest ECC level (two levels, this and half of it).
        min_correlation: smallest ECC correlation coefficient accepted.
        min_overlap: smallest fraction of the reference the warped frame has to cover.
        max_scale_change: largest accepted zoom factor (and its inverse).
    """

    METHODS = ("auto", "features", "ecc")

    def __init__(
        self,
        method: str = "auto",
        max_features: int = 300,
        ratio: float = 0.8,
        min_inliers: int = 15,
        min_inlier_ratio: float = 0.25,
        ransac_threshold: float = 2.5,
        ecc_width: int = 80,
        min_correlation: float = 0.75,
        min_overlap: float = 0.3,
        max_scale_change: float = 2.0,
        motion: str = "similarity",
    ) -> None:
        self.motion = motion
        if method not in self.METHODS:
            raise ValueError(f"registration method must be one of {self.METHODS}; got {method!r}")
        self.method = method
        self.ratio = ratio
        self.min_inliers = min_inliers
        self.min_inlier_ratio = min_inlier_ratio
        self.ransac_threshold = ransac_threshold
        self.ecc_width = ecc_width
        self.min_correlation = min_correlation
        self.min_overlap = min_overlap
        self.max_scale_change = max_scale_change
        # Small patches and edge margins so that a 160-320 px wide image still yields keypoints near its borders.
        self._detector = cv2.ORB_create(
            nfeatures=max_features, scaleFactor=1.3, nlevels=4, edgeThreshold=12, patchSize=15, fastThreshold=12
        )
        self._matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self._references: list[dict] = []
        self._shape: tuple[int, int] | None = None
        self._ecc_scale: np.ndarray | None = None

    # ---------------------------------------------------------------------------------------------------- set-up
    def add_reference(self, grey: np.ndarray, to_base: np.ndarray | None = None) -> None:
        """Adds a reference view (uint8 grey); the first one added is the base and fixes the frame size.

        ``to_base`` maps the reference's pixels to the base's (identity for the base itself).
        """
        if self._shape is None:
            self._shape = grey.shape[:2]
            h, w = self._shape
            ecc_w = min(self.ecc_width, w)
            ecc_h = max(8, round(ecc_w * h / w))
            self._ecc_size = (ecc_w, ecc_h)
            self._ecc_scale = np.diag([ecc_w / w, ecc_h / h, 1.0])
        self._check_shape(grey)
        points, descriptors = self._detect(grey)
        usable = descriptors is not None and len(points) >= self.min_inliers
        self._references.append({
            "points": points if usable else None,
            "descriptors": descriptors if usable else None,
            "ecc": self._ecc_pyramid(grey),
            "to_base": np.eye(3) if to_base is None else np.asarray(to_base, dtype=np.float64),
        })

    def clear(self) -> None:
        """Forgets all references (the next one added becomes the base)."""
        self._references.clear()
        self._shape = None

    @property
    def num_references(self) -> int:
        return len(self._references)

    def _check_shape(self, grey: np.ndarray) -> None:
        if grey.shape[:2] != self._shape or grey.ndim != 2 or grey.dtype != np.uint8:
            raise ValueError(f"registrar expects uint8 grey images of shape {self._shape}; "
                             f"got {grey.dtype} {grey.shape}")

    def _detect(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        keypoints, descriptors = self._detector.detectAndCompute(grey, None)
        points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
        return points, descriptors

    def _ecc_pyramid(self, grey: np.ndarray) -> list[np.ndarray]:
        """Fine and coarse float32 images for ECC, lightly blurred so that flat, hard-edged scenes have gradients."""
        fine = cv2.resize(grey, self._ecc_size, interpolation=cv2.INTER_AREA).astype(np.float32)
        fine = cv2.GaussianBlur(fine, (5, 5), 1.0)
        return [fine, cv2.pyrDown(fine)]

    # ---------------------------------------------------------------------------------------------- registration
    def register(self, grey: np.ndarray) -> Registration:
        """Homography from ``grey`` (same size as the base reference) to the base reference."""
        if not self._references:
            raise RuntimeError("add_reference() must be called before register()")
        self._check_shape(grey)
        failures: list[Registration] = []
        if self.method in ("auto", "features"):
            points, descriptors = self._detect(grey)
            for ref in self._references:
                if ref["descriptors"] is None:
                    failures.append(_failed("features", "too few features in the reference view"))
                    continue
                if descriptors is None or len(points) < self.min_inliers:
                    failures.append(_failed("features", f"too few features in the frame ({len(points)})"))
                    break
                result = self._match(points, descriptors, ref)
                if result.ok:
                    return result
                failures.append(result)
        if self.method in ("auto", "ecc"):
            pyramid = self._ecc_pyramid(grey)
            for ref in self._references:
                result = self._ecc(pyramid, ref)
                if result.ok:
                    return result
                failures.append(result)
        reasons = "; ".join(dict.fromkeys(f"{f.method}: {f.reason}" for f in failures))
        best = max(failures, key=lambda f: f.inliers)
        correlations = [f.correlation for f in failures if not np.isnan(f.correlation)]
        return Registration(False, None, best.inliers, best.matches, reasons, best.method,
                            max(correlations, default=float("nan")))

    def _match(self, points, descriptors, ref) -> Registration:
        pairs = self._matcher.knnMatch(descriptors, ref["descriptors"], k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.ratio * p[1].distance]
        if len(good) < self.min_inliers:
            return _failed("features", f"too few feature matches ({len(good)})", matches=len(good))
        src = points[[m.queryIdx for m in good]]
        dst = ref["points"][[m.trainIdx for m in good]]
        if self.motion == "homography":
            homography, inlier_mask = cv2.findHomography(src, dst, cv2.RANSAC, self.ransac_threshold, maxIters=500)
        else:
            estimate = cv2.estimateAffine2D if self.motion == "affine" else cv2.estimateAffinePartial2D
            affine, inlier_mask = estimate(src, dst, method=cv2.RANSAC, ransacReprojThreshold=self.ransac_threshold,
                                           maxIters=500, refineIters=10)
            homography = None if affine is None else np.vstack([affine, [0.0, 0.0, 1.0]])
        inliers = int(inlier_mask.sum()) if inlier_mask is not None else 0
        if homography is None or inliers < self.min_inliers:
            return _failed("features", f"too few RANSAC inliers ({inliers})", inliers, len(good))
        if inliers < self.min_inlier_ratio * len(good):
            return _failed("features", f"inlier ratio too low ({inliers}/{len(good)})", inliers, len(good))
        homography = ref["to_base"] @ homography
        homography /= homography[2, 2]
        reason = self._implausible(homography)
        if reason:
            return _failed("features", reason, inliers, len(good))
        return Registration(True, homography, inliers, len(good), "", "features")

    def _ecc(self, pyramid: list[np.ndarray], ref) -> Registration:
        fine, coarse = pyramid
        ref_fine, ref_coarse = ref["ecc"]
        # Start from the translation phase correlation finds at the coarse level.
        (dx, dy), _ = cv2.phaseCorrelate(ref_coarse, coarse)
        warp = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-4)
        try:
            # The warp maps reference coordinates to frame coordinates.
            _, warp = cv2.findTransformECC(ref_coarse, coarse, warp, cv2.MOTION_AFFINE, criteria, None, 1)
            warp[:, 2] *= 2.0
            correlation, warp = cv2.findTransformECC(ref_fine, fine, warp, cv2.MOTION_AFFINE, criteria, None, 1)
        except cv2.error:
            return _failed("ecc", "ECC alignment did not converge")
        if correlation < self.min_correlation:
            return _failed("ecc", f"ECC correlation too low ({correlation:.2f})", correlation=correlation)
        ref_to_frame = np.vstack([warp.astype(np.float64), [0.0, 0.0, 1.0]])
        try:
            frame_to_ref = np.linalg.inv(ref_to_frame)
        except np.linalg.LinAlgError:
            return _failed("ecc", "ECC warp is singular", correlation=correlation)
        scale = self._ecc_scale
        homography = ref["to_base"] @ np.linalg.inv(scale) @ frame_to_ref @ scale
        homography /= homography[2, 2]
        reason = self._implausible(homography)
        if reason:
            return _failed("ecc", reason, correlation=correlation)
        return Registration(True, homography, 0, 0, "", "ecc", float(correlation))

    def _implausible(self, homography: np.ndarray) -> str:
        """Empty string when the homography looks like real camera motion, else what is wrong with it."""
        det = float(np.linalg.det(homography[:2, :2]))
        if not (1.0 / self.max_scale_change**2 <= det <= self.max_scale_change**2):
            return f"implausible scale change (area factor {det:.2f})"
        h, w = self._shape
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32).reshape(-1, 1, 2)
        warped = cv2.perspectiveTransform(corners, homography).reshape(-1, 2).astype(np.float32)
        if not cv2.isContourConvex(warped):
            return "homography folds the frame"
        area, _ = cv2.intersectConvexConvex(warped, corners.reshape(-1, 2))
        if area / float(w * h) < self.min_overlap:
            return f"frame overlaps the reference view too little ({area / float(w * h):.0%})"
        return ""
