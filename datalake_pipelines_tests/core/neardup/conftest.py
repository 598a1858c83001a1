"""The headless Chromium of the partition gallery's tests, shared with the near-duplicate page's test."""

from datalake_pipelines_tests.core.preview.test_gallery import browser  # noqa: F401 - a pytest fixture
