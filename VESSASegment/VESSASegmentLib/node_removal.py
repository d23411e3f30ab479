"""removeWithDisplayNodes: take a node out of the scene together with its display and storage nodes."""

from __future__ import annotations

import slicer


def removeWithDisplayNodes(node) -> None:
    """Remove `node` and the display/storage nodes it owns (the scene does not cascade)."""
    scene = node.GetScene() or slicer.mrmlScene
    owned = [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
    if node.GetStorageNode() is not None:
        owned.append(node.GetStorageNode())
    for child in owned:
        if child is not None:
            scene.RemoveNode(child)
    scene.RemoveNode(node)
