"""Test helpers: scripts run as processes, and modules the tests import (stdlib only)."""
