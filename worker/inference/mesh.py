"""3-D surfaces of masks (the paper's Fig. 7): marching cubes, ASCII STL and OBJ.

Vertex coordinates are in millimetres along the volume's voxel axes (row, column,
slice) times the voxel spacing, starting at the centre of voxel (0, 0, 0); the mask
is padded by one empty voxel so every surface is closed, even where the mask touches
the edge of the volume.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from db.errors import SegbenchError

MESH_FORMATS = (".stl", ".obj")


class MeshError(SegbenchError, ValueError):
    """A mask with no surface, or an output path of an unknown kind."""


def mask_surface(mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) in mm, faces (F, 3) vertex indices) of the mask's surface."""
    from skimage.measure import marching_cubes

    m = np.asarray(mask) > 0
    if m.ndim != 3:
        raise MeshError(f"mask must be 3-D, got shape {m.shape}.")
    if not m.any():
        raise MeshError("the mask is empty, so it has no surface to write.")
    s = tuple(float(x) for x in spacing)
    padded = np.pad(m, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, spacing=s)
    return verts - np.asarray(s, dtype=verts.dtype), faces


def _normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


def stl_text(verts: np.ndarray, faces: np.ndarray, name: str = "segbench") -> str:
    """ASCII STL of a triangle mesh."""
    normals = _normals(verts, faces)
    out = [f"solid {name}"]
    for n, f in zip(normals, faces, strict=True):
        out.append(f"  facet normal {n[0]:.6e} {n[1]:.6e} {n[2]:.6e}")
        out.append("    outer loop")
        for v in verts[f]:
            out.append(f"      vertex {v[0]:.6e} {v[1]:.6e} {v[2]:.6e}")
        out.append("    endloop")
        out.append("  endfacet")
    out.append(f"endsolid {name}")
    return "\n".join(out) + "\n"


def obj_text(verts: np.ndarray, faces: np.ndarray, name: str = "segbench") -> str:
    """Wavefront OBJ of a triangle mesh (1-based face indices)."""
    lines = [f"# {name}: {len(verts)} vertices, {len(faces)} triangles, mm", f"o {name}"]
    lines += [f"v {v[0]:.6f} {v[1]:.6f} {v[2]:.6f}" for v in verts]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    return "\n".join(lines) + "\n"


def write_mesh(path: Path | str, verts: np.ndarray, faces: np.ndarray, name: str = "") -> Path:
    """Write STL or OBJ (by suffix), atomically."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_FORMATS:
        raise MeshError(f"Output {path} must end in .stl or .obj.")
    if not path.parent.is_dir():
        raise MeshError(f"Output folder {path.parent} does not exist; create it first.")
    name = name or path.stem
    text = stl_text(verts, faces, name) if suffix == ".stl" else obj_text(verts, faces, name)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def mesh_volume(verts: np.ndarray, faces: np.ndarray) -> float:
    """Enclosed volume (mm^3) of a closed, consistently oriented mesh."""
    tri = verts[faces].astype(np.float64)
    return float(abs(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()) / 6)
