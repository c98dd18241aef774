# Licensed under a 3-clause BSD style license - see LICENSE
"""astroquery's parser of Horizons answers, applied to a text we already hold."""

__all__ = []


class _TextResponse:
    """The minimum of a `requests.Response` that astroquery's parser uses."""

    def __init__(self, text):
        self.text = text

    def raise_for_status(self):
        pass


def astroquery_table(text, query_type, target_id="target"):
    """The table astroquery's ``Horizons`` query would return for the answer ``text``.

    ``query_type`` is ``"ephemerides"``, ``"elements"`` or ``"vectors"``; ``target_id``
    only names the target in the table. Raises astroquery's `ValueError` on a text it
    cannot read. astroquery has no public parser of a recorded answer, so its query
    class's ``_parse_result`` is used directly (one place, to follow astroquery's changes).
    """
    from astroquery.jplhorizons import HorizonsClass

    parser = HorizonsClass()
    parser.query_type = query_type
    parser.id = str(target_id)
    try:
        return parser._parse_result(_TextResponse(text))
    finally:
        parser._session.close()
