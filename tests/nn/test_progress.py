"""The training progress: plain lines with rate and time left off a terminal, tqdm's bar on one."""
import io

from nn.cli.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_off_a_terminal_it_writes_a_tenth_of_the_steps_as_plain_lines():
    stream = io.StringIO()
    progress = Progress(20, "gru", stream)
    for step in range(1, 21):
        progress.update(step, loss=0.5, acc=0.25)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in stream.getvalue()
    assert lines[0].startswith("gru step 2/20 [")
    assert lines[-1].startswith("gru step 20/20 [") and lines[-1].endswith(", loss 0.5  acc 0.25]")
    assert all("step/s" in line and "<" in line for line in lines)  # rate, elapsed<left


def test_a_run_shorter_than_ten_steps_reports_every_step():
    stream = io.StringIO()
    progress = Progress(3, "rnn", stream)
    for step in (1, 2, 3):
        progress.update(step)
    assert [line.split(" [")[0] for line in stream.getvalue().splitlines()] == [
        "rnn step 1/3", "rnn step 2/3", "rnn step 3/3"]


def test_on_a_terminal_it_redraws_one_bar_in_place():
    stream = _Terminal()
    progress = Progress(50, "rnn", stream)
    for step in range(1, 51):
        progress.update(step, loss=0.17)
    text = stream.getvalue()
    assert "\r" in text and "50/50" in text and "loss 0.17" in text
    assert text.endswith("\n")  # the finished bar leaves its line
