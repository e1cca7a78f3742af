"""The Vesuvius surface-detection metric, computed locally: SurfaceDice, VOI, TopoScore.

``leaderboard`` joins the three terms the way the organizers' ``topometrics`` package does
(ignored voxels set to background in both masks first, then 0.30 / 0.35 / 0.35); ``official``
calls ``topometrics`` itself when it is importable (in its own checkout or installed).
``surface_dice`` and ``voi`` follow the official definitions exactly; ``topology`` counts
features per octant (Betti numbers, exactly the official counts; an upper bound of the matches);
``matching`` matches them by place, an approximation of Betti matching whose measured error
every score JSON carries (docs/official-metric.md). ``components`` picks the
connected-component labeller (connected-components-3d when installed, else scipy).

May import: what :mod:`runtime.volumes` may (numpy, scipy; cc3d, edt and topometrics when present).
"""
