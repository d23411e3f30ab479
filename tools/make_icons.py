"""Draw the extension and module icons (128x128 PNG) with Qt; run after changing a design.

    python tools/make_icons.py    (PySide6, no display needed: it paints on a QImage)
"""

from __future__ import annotations

import sys
from pathlib import Path

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QImage, QLinearGradient, QPainter, QPainterPath, QPen

ROOT = Path(__file__).resolve().parents[1]
SIZE = 128
NAVY, TEAL, CORAL, WHITE = QColor("#13294b"), QColor("#1f8a99"), QColor("#ff7a59"), QColor("#ffffff")


def blob(center: QPointF, radius: float) -> QPainterPath:
    """A smooth organ-like closed outline around `center`."""
    offsets = [(1.0, 0.1), (0.55, 0.95), (-0.45, 0.85), (-1.0, 0.05), (-0.6, -0.8), (0.4, -0.9)]
    points = [QPointF(center.x() + radius * x, center.y() + radius * y) for x, y in offsets]
    path = QPainterPath()
    path.moveTo((points[-1] + points[0]) / 2)
    for index, point in enumerate(points):
        following = points[(index + 1) % len(points)]
        path.quadTo(point, (point + following) / 2)
    return path


def draw_background(painter: QPainter) -> None:
    gradient = QLinearGradient(0, 0, SIZE, SIZE)
    gradient.setColorAt(0.0, NAVY)
    gradient.setColorAt(1.0, TEAL)
    painter.setPen(Qt.NoPen)
    painter.setBrush(gradient)
    painter.drawRoundedRect(QRectF(4, 4, SIZE - 8, SIZE - 8), 22, 22)


def draw_segment(painter: QPainter, center: QPointF, radius: float) -> None:
    """A filled, outlined segment as Slicer shows one."""
    fill = QColor(CORAL)
    fill.setAlpha(190)
    painter.setBrush(fill)
    painter.setPen(QPen(WHITE, 4))
    painter.drawPath(blob(center, radius))


def draw_extension(painter: QPainter) -> None:
    """VESSA: a V over a segment."""
    draw_segment(painter, QPointF(64, 78), 34)
    painter.setPen(QPen(WHITE, 13, Qt.SolidLine, Qt.RoundCap, Qt.RoundJoin))
    painter.setBrush(Qt.NoBrush)
    painter.drawPolyline([QPointF(30, 26), QPointF(64, 100), QPointF(98, 26)])


def draw_segment_module(painter: QPainter) -> None:
    """VESSA Segment: a dashed template outline guiding a filled segment."""
    painter.setPen(QPen(WHITE, 3, Qt.DashLine))
    painter.setBrush(Qt.NoBrush)
    painter.drawPath(blob(QPointF(42, 42), 22))
    draw_segment(painter, QPointF(76, 78), 30)


def draw_train_module(painter: QPainter) -> None:
    """VESSA Train: a rising learning curve over a segment."""
    draw_segment(painter, QPointF(74, 82), 28)
    points = [QPointF(22, 100), QPointF(42, 70), QPointF(62, 52), QPointF(84, 38), QPointF(106, 30)]
    painter.setPen(QPen(WHITE, 6, Qt.SolidLine, Qt.RoundCap, Qt.RoundJoin))
    painter.setBrush(Qt.NoBrush)
    painter.drawPolyline(points)
    painter.setBrush(WHITE)
    for point in points:
        painter.drawEllipse(point, 5, 5)


ICONS = {
    "Resources/Icons/VESSA.png": draw_extension,
    "VESSASegment/Resources/Icons/VESSASegment.png": draw_segment_module,
    "VESSATrain/Resources/Icons/VESSATrain.png": draw_train_module,
    "VESSASegment/Resources/Icons/VESSA.png": draw_extension,  # the "VESSA" Segment Editor effect
}


def main() -> int:
    for relative, draw in ICONS.items():
        image = QImage(SIZE, SIZE, QImage.Format_ARGB32)
        image.fill(Qt.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.Antialiasing)
        draw_background(painter)
        draw(painter)
        painter.end()
        path = ROOT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not image.save(str(path)):
            print(f"could not write {path}", file=sys.stderr)
            return 1
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
