"""The runtime's errors survive pickling, so they reach a caller across a process boundary (Ray) as themselves."""

from __future__ import annotations

import pickle

from workers.model.errors import Cancelled, ModelInputError


def test_model_input_error_keeps_its_field_and_message_through_pickle():
    original = ModelInputError("width", "must be a multiple of 32, got 100")
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is ModelInputError and isinstance(copy, ValueError)
    assert (copy.field, copy.message, str(copy)) == ("width", "must be a multiple of 32, got 100",
                                                     "width: must be a multiple of 32, got 100")


def test_cancelled_survives_pickle():
    copy = pickle.loads(pickle.dumps(Cancelled("cancelled before decode")))
    assert type(copy) is Cancelled and str(copy) == "cancelled before decode"
