"""FHIR care-record adapter: VKP CarePlans and no-basis Appointments to care-record records.

`read_sources`, `read_source` and `read_text` turn STU3/R4 XML and R4 JSON (single resources or
Bundles, nested message Bundles included) into `portner.domain.care_record.ParsedSource`. They
report what they cannot import as ImportProblems and raise only for unreadable files
(SourceFileError) and caller mistakes (naive horizon, unknown time zone).
"""

from portner.fhir.context import DEFAULT_VISIT_LENGTH
from portner.fhir.reader import SourceFileError, read_source, read_sources, read_text

__all__ = ["DEFAULT_VISIT_LENGTH", "SourceFileError", "read_source", "read_sources", "read_text"]
