import json

from ssd.cli.main import main


def test_info_lists_architectures(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "mobilenetv3_ssd" in out and "vgg16_ssd512" in out


def test_info_summarises_one_architecture_as_json(capsys):
    assert (
        main(["info", "--arch", "mobilenetv3_ssd", "--num-classes", "4", "--input-size", "512", "--json"])
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["input_size"] == [512, 512] and summary["feature_maps"][0] == [32, 32]


def test_user_errors_are_one_line_and_exit_2(capsys):
    assert main(["info", "--arch", "vgg16_ssd300", "--input-size", "64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: vgg16_ssd300: input size (64, 64) is too small") and "Traceback" not in err
