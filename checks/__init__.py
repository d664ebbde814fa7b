"""The check catalogue (../shared/spec/CHECKS.md), one module per measure.

Every module registers its checks with `vmaudit.engine.check`; `vmaudit.engine.load_checks()` imports
them all. A check reads only the facts snapshot and the policy.
"""
