"""The Vesuvius surface-detection metric, computed locally: SurfaceDice, VOI, TopoScore.

``leaderboard`` joins the three terms the way the organizers' ``topometrics`` package does
(ignored voxels set to background in both masks first, then 0.30 / 0.35 / 0.35); ``official``
calls ``topometrics`` itself when it is importable. ``surface_dice`` and ``voi`` follow the
official definitions exactly; ``topology`` counts features per octant (Betti numbers) but cannot
match them spatially, so every TopoScore it gives is labelled approximate. ``components`` picks
the connected-component labeller (connected-components-3d when installed, else scipy).

May import: what :mod:`runtime.volumes` may (numpy, scipy; cc3d, edt and topometrics when present).
"""
