"""vmaudit plan: migration plans that make a fleet meet M1, M4 and M7 (see docs/plan.md)."""
