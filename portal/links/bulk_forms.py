"""Forms of /links/bulk: the file, then the choice to create (and send) the checked rows."""

from __future__ import annotations

from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import BooleanField

from ..i18n import staff_lazy_gettext as _l


class BulkUploadForm(FlaskForm):
    file = FileField(_l("File of bills (CSV or XLSX)"),
                     validators=[FileRequired(message=_l("Choose a CSV or XLSX file."))],
                     description=_l("At most 10,000 rows and 5 MB. The first row names the "
                                    "columns."))


class BulkCreateForm(FlaskForm):
    send = BooleanField(_l("Send each link to the patient now (SMS and email, where the row "
                           "has them)"),
                        description=_l("A row's own send column decides for that row."))
    drop_bad = BooleanField(_l("Leave out the rows with problems"))
