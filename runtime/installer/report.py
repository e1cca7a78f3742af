"""What an install did: installed, skipped and why, warnings, timings; as text, one line, or JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime.installer.plan import PlannedWheel, Skip


@dataclass(frozen=True)
class InstallReport:
    wheelhouses: tuple[str, ...]  # wheelhouses the plan drew on
    ignored: tuple[str, ...]  # "<path>: <why>" for wheelhouses left out
    installed: tuple[PlannedWheel, ...]  # installed now (in a dry run: what would be)
    skipped: tuple[Skip, ...]
    warnings: tuple[str, ...]
    dry_run: bool
    pip_ran: bool
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds, with "total"

    @property
    def seconds(self) -> float:
        return self.timings.get("total", 0.0)

    def summary(self) -> str:
        """One line, for the first cell of a kernel."""
        verb = "would install" if self.dry_run else "installed"
        if self.installed:
            names = ", ".join(f"{wheel.name} {wheel.version}" for wheel in self.installed)
            what = f"{verb} {len(self.installed)} ({names})"
            unverified = sum(not wheel.verified for wheel in self.installed)
            if unverified:
                what += f", {unverified} of them UNVERIFIED (no manifest, no hash check)"
        else:
            what = "nothing to install"
        houses = len(self.wheelhouses)
        replaced = [wheel for wheel in self.installed if wheel.replaces]
        replaced_bytes = sum(wheel.size or 0 for wheel in replaced)
        parts = [
            f"kaggle-offline: {what}",
            *(
                [
                    "replacing "
                    + ", ".join(f"{w.name} {w.replaces} -> {w.version}" for w in replaced)
                    + f" ({len(replaced)} wheels, {_size(replaced_bytes)})"
                ]  # fmt: skip
                if replaced
                else []
            ),
            f"{len(self.skipped)} already satisfied or skipped",
            f"{houses} wheelhouse{'s' if houses != 1 else ''}",
        ]
        if self.warnings:
            parts.append(f"{len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''}")
        return ", ".join(parts) + f" in {self.seconds:.2f} s"

    def render(self) -> str:
        """The full report, for ``python -m runtime install``."""
        lines = [self.summary()]
        for path in self.wheelhouses:
            lines.append(f"  wheelhouse {path}")
        for reason in self.ignored:
            lines.append(f"  ignored    {reason}")
        verb = "would install" if self.dry_run else "installed"
        for wheel in self.installed:
            notes = []
            if wheel.replaces:
                notes.append(f"replaces {wheel.replaces}")
            if not wheel.verified:
                notes.append("UNVERIFIED: no manifest, no hash check")
            if wheel.optional:
                notes.append("optional")
            suffix = f" ({'; '.join(notes)})" if notes else ""
            lines.append(f"  {verb} {wheel.name} {wheel.version} from {wheel.wheelhouse}{suffix}")
        for skip in self.skipped:
            lines.append(f"  skipped    {skip.name} {skip.version}: {skip.reason}")
        for warning in self.warnings:
            lines.append(f"  warning    {warning}")
        if self.timings:
            phases = ", ".join(
                f"{phase} {seconds:.3f} s" for phase, seconds in self.timings.items()
            )
            lines.append(f"  timings    {phases}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "pip_ran": self.pip_ran,
            "wheelhouses": list(self.wheelhouses),
            "ignored": list(self.ignored),
            "installed": [
                {
                    "name": wheel.name,
                    "version": wheel.version,
                    "filename": wheel.filename,
                    "wheelhouse": str(wheel.wheelhouse),
                    "verified": wheel.verified,
                    "optional": wheel.optional,
                    "replaces": wheel.replaces,
                }
                for wheel in self.installed
            ],
            "skipped": [
                {"name": skip.name, "version": skip.version, "reason": skip.reason}
                for skip in self.skipped
            ],
            "warnings": list(self.warnings),
            "timings": dict(self.timings),
        }


def _size(count: int | None) -> str:
    count = count or 0
    if count >= 10**9:
        return f"{count / 1e9:.2f} GB"
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count / 1e3:.1f} kB"
