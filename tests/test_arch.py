import pytest

from collegial.cli import main
from collegial.models import ArchError, format_arch, parse_arch, parse_wrn


@pytest.mark.parametrize(
    "s, expected", [("37x10d", (37, 10)), ("1x128d", (1, 128)), ("60x6d", (60, 6)), ("2x2d", (2, 2))]
)
def test_parse_good(s, expected):
    assert parse_arch(s) == expected
    assert format_arch(*expected) == s


BAD = ["0x10d", "x10d", "37x10", "-3x10d", "37x0d", "1e3x2d", "", "37x10dd", "37X10d", "3.5x2d",
       "037x10d", " ", "37 x 10d", "99999x9999d", "1x1000000000000d", "65537x1d"]


@pytest.mark.parametrize("s", BAD)
def test_parse_bad(s):
    with pytest.raises(ArchError):
        parse_arch(s)


def test_parse_wrn():
    assert parse_wrn("28-10") == (28, 10)
    for bad in ["28", "28-", "-10", "28-0", "28x10", "0-10", "28-10-1", "28-1000"]:
        with pytest.raises(ArchError):
            parse_wrn(bad)


@pytest.mark.parametrize("s", BAD + ["1x60000d"])
def test_cli_rejects_bad_arch_with_one_line(s, capsys):
    try:
        rc = main(["count", "resnext29", s, "--dataset", "cifar10"])
    except SystemExit as e:  # argparse usage error ('-3x10d' looks like an option)
        rc = e.code
    assert rc == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["count", "resnext99", "37x10d", "--dataset", "cifar10"],
        ["count", "resnext29", "37x10d", "--dataset", "svhn"],
        ["count", "wrn", "37x10d", "--dataset", "imagenet32"],
        ["count", "wrn", "27-10", "--dataset", "imagenet32"],
    ],
)
def test_cli_rejects_unknown_family_dataset(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_cli_usage_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["count", "resnext29", "37x10d", "--no-such-flag"])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
