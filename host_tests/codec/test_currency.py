"""wire.currency: the one ISO 4217 table of the firmware and the tools."""
from wire import currency


def test_every_record_reads_back_both_ways():
    n = 0
    for i in range(0, len(currency.TABLE), 7):
        alpha = currency.TABLE[i:i + 3]
        row = currency.by_alpha(alpha)
        assert row[0] == alpha and currency.by_number(row[1]) == row
        n += 1
    assert n == len(currency.TABLE) // 7 and len(currency.TABLE) % 7 == 0


def test_known_values_and_unknown_codes():
    assert currency.by_alpha("EUR") == ("EUR", 978, 2)
    assert currency.by_number(953) == ("XPF", 953, 0)  # no decimals
    assert currency.by_number(36) == ("AUD", 36, 2)  # "036" on the wire
    assert currency.by_alpha("eur") is None and currency.by_alpha("EU") is None
    assert currency.by_alpha("978") is None  # a numeric code is not an alphabetic one
    assert currency.by_number(999) is None
    assert currency.name(392) == ("JPY", 0) and currency.name(999) == ("999", 2)


def test_no_code_matches_across_record_boundaries():
    # "URU" would straddle "EUR" and "USD" if the search were not per record
    assert currency.by_alpha("2US") is None and currency.by_number(782) is None
