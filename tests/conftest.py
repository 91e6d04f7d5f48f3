"""Fixtures shared by every test folder."""

from tests.kube_emulator import kube_emulator

__all__ = ["kube_emulator"]
