"""/api/ws from a real browser's JavaScript (Debian's chromium): the session cookie the login
set is what authenticates it; a task's status and output events arrive in order, and after
the socket drops, a new one resubscribed with after_seq catches up with no gap or double."""

from pathlib import Path

from tests.faults import write_script

# A socket in the page: every message it gets is kept, in order, in window.live.messages.
LIVE_JS = """() => {
  window.live = {
    messages: [], socket: null,
    open() {
      return new Promise((resolve, reject) => {
        const scheme = location.protocol === "https:" ? "wss" : "ws";
        const socket = new WebSocket(`${scheme}://${location.host}/api/ws`);
        socket.onmessage = (event) => this.messages.push(JSON.parse(event.data));
        socket.onopen = () => resolve();
        socket.onerror = () => reject(new Error("websocket refused"));
        this.socket = socket;
      });
    },
    send(message) { this.socket.send(JSON.stringify(message)); },
    close() {
      return new Promise((resolve) => { this.socket.onclose = () => resolve();
                                        this.socket.close(); });
    },
  };
}"""

END = ("(id) => window.live.messages.some("
       "(m) => m.type === 'output_end' && m.task_id === id)")


def counting_template(rest, project_id: int, folder: Path, lines: int, pause: float) -> int:
    write_script(folder, "count.sh",
                 f"for i in $(seq 1 {lines}); do echo line-$i; sleep {pause}; done\n")
    return rest.template(project_id, folder, "count.sh")


def messages(page) -> list[dict]:
    return page.evaluate("() => window.live.messages")


def output(found: list[dict], task_id: int) -> list[dict]:
    return [m for m in found if m["type"] == "output" and m["task_id"] == task_id]


def test_a_task_live_in_the_browser_then_caught_up_after_a_reconnect(
        logged_in_page, live_runner, rest, tmp_path):
    page = logged_in_page
    project = rest.project("live")
    quick = counting_template(rest, project, tmp_path / "quick", 20, 0)
    slow = counting_template(rest, project, tmp_path / "slow", 40, 0.05)
    page.evaluate(LIVE_JS)
    page.evaluate("() => window.live.open()")  # no token: the login's cookie
    page.wait_for_function("() => window.live.messages.length > 0")
    hello = messages(page)[0]
    assert hello == {"type": "hello", "user": {"id": 1, "username": "admin", "admin": True}}

    # A task from start to end: its status events in order, its output whole and in order.
    task_id = rest.run(project, quick)
    page.evaluate("(id) => window.live.send({subscribe_output: id, after_seq: 0})", task_id)
    page.wait_for_function(END, arg=task_id)
    found = messages(page)
    statuses: list[str] = []
    for message in found:
        if message["type"] == "task" and message["task_id"] == task_id:
            assert message["project_id"] == project
            if not statuses or statuses[-1] != message["status"]:
                statuses.append(message["status"])
    # The runner is free: the task is stored already given to it (no `waiting` first).
    assert statuses == ["starting", "running", "success"]
    frames = output(found, task_id)
    seqs = [m["seq"] for m in frames]
    assert seqs == sorted(set(seqs)) and seqs[0] == 1
    assert "".join(m["data"] for m in frames) == "".join(f"line-{i}\n" for i in range(1, 21))
    assert "".join(m["data"] for m in frames) == rest.raw_output(project, task_id)

    # A slower one: the socket drops mid-way (lines go on meanwhile), a new one resubscribes
    # after the last seq the page has.
    task_id = rest.run(project, slow)
    page.evaluate("(id) => window.live.send({subscribe_output: id})", task_id)
    page.wait_for_function("(id) => window.live.messages.filter("
                           "(m) => m.type === 'output' && m.task_id === id).length >= 5",
                           arg=task_id)
    page.evaluate("() => window.live.close()")
    before = output(messages(page), task_id)
    page.wait_for_timeout(500)
    page.evaluate("() => window.live.open()")
    page.evaluate("([id, seq]) => window.live.send({subscribe_output: id, after_seq: seq})",
                  [task_id, before[-1]["seq"]])
    page.wait_for_function(END, arg=task_id)
    frames = output(messages(page), task_id)
    seqs = [m["seq"] for m in frames]
    assert seqs == sorted(set(seqs)), seqs  # nothing twice, nothing out of order
    text = "".join(m["data"] for m in frames)
    assert text == "".join(f"line-{i}\n" for i in range(1, 41))  # nothing missing
    assert text == rest.raw_output(project, task_id)
    assert rest.task(project, task_id)["status"] == "success"
