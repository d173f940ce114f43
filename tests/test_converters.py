"""Every registered converter meets the contract (fixtures/contract_tests.py), without this file naming any:
as timm's tests/test_models.py covers every entry of ``list_models()``."""

from __future__ import annotations

import pytest

from converters import registry
from converters.contract import Converter
from fixtures.contract_tests import ConverterContract, ReportingContract, WritingContract


class TestRegisteredConverters(ConverterContract, WritingContract, ReportingContract):
    @pytest.fixture(params=registry.names())
    def converter(self, request: pytest.FixtureRequest) -> Converter:
        return registry.get(request.param)
