"""The manual pages in deploy/man, checked with the real mandoc and against
the code they describe.

mandoc must accept every page without a warning and render it.  Then the
pages are held to the code, read from its source so that a new option or
metric with no word in the pages fails here:

  - every option of the config loader's tables (common/conf.c), in the
    subsection of senderwatch.conf(5) for its table, with its default and
    its range where the table and conf_defaults() give them as numbers;
  - every option letter of each daemon's getopt and usage strings, and of
    senderwatch-ctl's, in its page; every ctl command and its options;
  - every Prometheus metric, control-socket and SIGUSR1 key a daemon
    writes, and every fail policy reason, in that daemon's page;
  - the configuration examples pass both daemons' -n;
  - SEE ALSO resolves among the pages.
"""
import glob
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from conftest import ROOT, SHIM, ALERTER

MAN = os.path.join(ROOT, "deploy", "man")
OURS = ["senderwatch-shim.8", "senderwatch-alerter.8", "senderwatch-ctl.8",
        "senderwatch.conf.5"]
PAGES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(MAN, "*.[1-9]")))

# The mandoc messages at STYLE level a page may have: the cross-references
# to pages that are not installed here (ours, Postfix's...), and a stale
# mandoc.db on the test machine.  Anything else is a fault of the page.
STYLE_OK = re.compile(r"STYLE: referenced manual not found|outdated mandoc\.db")

# senderwatch-ctl's commands as the tool's contract names them.
CTL_COMMANDS = ["show", "reset", "allow", "block", "factor", "clear",
                "crossings", "pending", "top", "keys", "stats", "status",
                "reload"]


def src(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def page(name):
    with open(os.path.join(MAN, name), encoding="utf-8") as f:
        return f.read()


def mandoc(*args):
    return subprocess.run(["mandoc"] + list(args), capture_output=True,
                          text=True, timeout=60)


def render(name):
    """The page as text, without the overstrike of bold and underline."""
    r = mandoc("-Tutf8", os.path.join(MAN, name))
    assert r.returncode == 0, r.stderr
    return re.sub(r".\x08", "", r.stdout)


def section(text, title):
    """The mdoc source of section .Sh title, up to the next .Sh."""
    m = re.search(r"^\.Sh %s\n(.*?)(?=^\.Sh |\Z)" % re.escape(title), text,
                  re.M | re.S)
    assert m, "no section %s" % title
    return m.group(1)


def subsection(text, title):
    """The mdoc source of .Ss title, up to the next .Ss or .Sh."""
    m = re.search(r"^\.Ss %s\n(.*?)(?=^\.S[sh] |\Z)" % re.escape(title),
                  text, re.M | re.S)
    assert m, "no subsection %s" % title
    return m.group(1)


def items(block):
    """{word: text} for each `.It Ic word ...` of a block: the item's
    source up to the next .It or .El."""
    out = {}
    for m in re.finditer(r"^\.It Ic (\w+)(.*?)(?=^\.It |^\.El|\Z)", block,
                         re.M | re.S):
        out.setdefault(m.group(1), "")
        out[m.group(1)] += m.group(2)
    return out


def plain(s):
    """mdoc source as words: the escapes a value may be written with."""
    return s.replace("\\(dq", '"').replace("\\&", "").replace("\\e", "\\")


def has_token(text, token):
    return re.search(r"(?<![\w.])%s(?![\w])" % re.escape(token), text)


def flags_in(block):
    """Every letter given with Fl in a block of mdoc source."""
    out = set()
    for m in re.finditer(r"\bFl (\S+)", block):
        out.update(m.group(1))
    return out


def test_every_page_is_here():
    assert set(OURS) <= set(PAGES), "missing: %s" % (set(OURS) - set(PAGES))


@pytest.mark.parametrize("name", PAGES)
def test_lint_no_warning(name):
    r = mandoc("-Tlint", "-W", "warning", os.path.join(MAN, name))
    assert r.stdout + r.stderr == "" and r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("name", PAGES)
def test_lint_style(name):
    r = mandoc("-Tlint", "-W", "style", os.path.join(MAN, name))
    bad = [l for l in (r.stdout + r.stderr).splitlines()
           if l.strip() and not STYLE_OK.search(l)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", PAGES)
def test_renders(name):
    text = render(name)
    base, sec = name.rsplit(".", 1)
    assert text.startswith("%s(%s)" % (base.upper(), sec))
    for sh in ("NAME", "SYNOPSIS" if sec == "8" else "DESCRIPTION",
               "DESCRIPTION", "SEE ALSO"):
        assert re.search(r"^%s$" % sh, text, re.M), sh
    assert re.search(r"^     %s – " % re.escape(base), text, re.M)
    s = page(name)
    assert re.search(r"^\.Dt %s %s$" % (re.escape(base.upper()), sec), s,
                     re.M)
    assert re.search(r"^\.Nm %s$" % re.escape(base), s, re.M)


@pytest.mark.parametrize("name", PAGES)
def test_see_also_resolves(name):
    s = page(name)
    for m in re.finditer(r"\.Xr (senderwatch\S*) (\d)", s):
        ref = "%s.%s" % (m.group(1), m.group(2))
        assert os.path.exists(os.path.join(MAN, ref)), \
            "%s refers to %s, which deploy/man lacks" % (name, ref)
    refs = {"%s.%s" % m for m in
            re.findall(r"^\.Xr (\S+) (\d)", section(s, "SEE ALSO"), re.M)}
    for other in OURS:
        if other != name and name in OURS:
            assert other in refs, "%s: SEE ALSO lacks %s" % (name, other)


# --- senderwatch.conf(5) against common/conf.c ------------------------------

def parse_conf_tables():
    """The loader's option tables: {table: [(name, type, off, min, max,
    arg)]}, the tables' names to their option arrays, the sections."""
    c = src("common", "conf.c")
    opts = {}
    for m in re.finditer(r"static const struct conf_opt (\w+)\[\] = \{(.*?)\n\};",
                         c, re.S):
        rows = []
        for e in re.finditer(r"(?:\[\w+\]\s*=\s*)?\{\s*\"(\w+)\",\s*(CT_\w+),"
                             r"\s*([^,]+),\s*([^,]+),\s*([^,]+),\s*([^,]+),"
                             r"\s*([^,]+),", m.group(2)):
            name, typ, off, _noff, lo, hi, arg = (x.strip() for x in e.groups())
            rows.append((name, typ, off, lo, hi, arg))
        assert rows, "no options parsed in %s" % m.group(1)
        opts[m.group(1)] = rows
    tables = {}
    for m in re.finditer(r"static const struct conf_table (\w+) = \{(.*?)\};",
                         c, re.S):
        o = re.search(r"(conf_\w+_opts)", m.group(2))
        tables[m.group(1)] = o.group(1)
    body = re.search(r"conf_sections\[\] = \{(.*?)\n\};", c, re.S).group(1)
    sections = re.findall(r"\{\s*\"(\w+)\",\s*(&\w+|NULL)\s*\}", body)
    assert sections and tables and opts
    return c, opts, tables, sections


def conf_tree():
    """[(dotted path of a table, its option rows)], walking the sections
    and the CT_MAP and CT_LIMITS options down."""
    c, opts, tables, sections = parse_conf_tables()
    # The rules section has no table: each rule is walked with
    # conf_rule_table, and each item of a rule's limits with
    # conf_limit_table.  Hold the code to that, then follow it.
    assert "conf_walk(p, path, v, &conf_rule_table" in c
    assert "conf_walk(p, item, e, &conf_limit_table" in c
    out = []

    def walk(path, table):
        rows = opts[tables[table]]
        out.append((path, rows))
        for name, typ, _off, _lo, _hi, arg in rows:
            if typ == "CT_MAP":
                walk(path + "." + name, arg.lstrip("&"))
            elif typ == "CT_LIMITS":
                walk(path + "." + name + "[]", "conf_limit_table")

    for name, table in sections:
        walk(name if table != "NULL" else name + ".NAME",
             table.lstrip("&") if table != "NULL" else "conf_rule_table")
    return c, out


# Where senderwatch.conf(5) documents each table of the loader.
CONF_HEADINGS = {
    "shim": "The shim section",
    "redis": "The redis section",
    "redis.sentinel": "Redis Sentinel",
    "events": "The events section",
    "rules.NAME": "The rules section",
    "rules.NAME.limits[]": "Limits",
    "rules.NAME.postfix": "Postfix settings",
    "alerts": "The alerts section",
    "control": "The control section",
    "metrics": "The metrics section",
}


def test_conf_every_table_has_its_subsection():
    _, tree = conf_tree()
    paths = [p for p, _ in tree]
    assert sorted(paths) == sorted(CONF_HEADINGS), \
        "tables in common/conf.c: %s; documented: %s (a new table needs " \
        "its subsection in senderwatch.conf.5 and a line in " \
        "CONF_HEADINGS)" % (paths, sorted(CONF_HEADINGS))
    s = page("senderwatch.conf.5")
    for path in paths:
        subsection(s, CONF_HEADINGS[path])


def test_conf_every_option_is_documented():
    _, tree = conf_tree()
    s = page("senderwatch.conf.5")
    missing = []
    for path, rows in tree:
        documented = items(subsection(s, CONF_HEADINGS[path]))
        for name, *_ in rows:
            if name not in documented:
                missing.append("%s.%s" % (path, name))
            elif len(documented[name].split()) < 4:
                missing.append("%s.%s (no description)" % (path, name))
    assert not missing, "not in senderwatch.conf.5: %s" % missing
    # And nothing documented that the loader does not know.
    for path, rows in tree:
        documented = items(subsection(s, CONF_HEADINGS[path]))
        extra = set(documented) - {r[0] for r in rows}
        assert not extra, "%s: documented but not in the table: %s" % (
            path, extra)


def test_conf_every_section_is_named():
    _, _, _, sections = parse_conf_tables()
    desc = section(page("senderwatch.conf.5"), "DESCRIPTION")
    intro = desc[:desc.index(".Ss ")]
    for name, _ in sections:
        assert re.search(r"^\.Ic %s\b" % name, intro, re.M), name


def duration_forms(ms):
    """Every way a duration of ms milliseconds may be written."""
    if ms == 0:
        return ["0"] + ["0" + u for u in ("ms", "s", "m", "h", "d")]
    return ["%d%s" % (ms // n, u) for n, u in
            ((1, "ms"), (1000, "s"), (60000, "m"), (3600000, "h"),
             (86400000, "d")) if ms % n == 0]


def c_number(expr, macros):
    """A table's min or max as an integer, or None (an expression)."""
    expr = macros.get(expr, expr)
    if re.fullmatch(r"0[0-7]+", expr):
        return int(expr, 8)
    if re.fullmatch(r"\d+", expr):
        return int(expr)
    return None


def header_macros():
    out = {}
    for h in glob.glob(os.path.join(ROOT, "common", "*.h")):
        with open(h) as f:
            for m in re.finditer(r"^#define\s+(\w+)\s+\(?(\d+)\)?\s*(?:/\*.*)?$",
                                 f.read(), re.M):
                out[m.group(1)] = m.group(2)
    return out


def assert_mentions(where, text, forms, what):
    assert any(has_token(text, f) for f in forms), \
        "%s: %s should say %s" % (where, what, " or ".join(forms))


def test_conf_ranges_are_documented():
    """The min and max of every number, size and duration option whose
    table gives them as numbers, in the option's paragraph."""
    _, tree = conf_tree()
    macros = header_macros()
    s = page("senderwatch.conf.5")
    checked = 0
    for path, rows in tree:
        documented = items(subsection(s, CONF_HEADINGS[path]))
        for name, typ, _off, lo, hi, _arg in rows:
            text = plain(documented[name])
            where = "%s.%s" % (path, name)
            lo, hi = c_number(lo, macros), c_number(hi, macros)
            if typ in ("CT_INT", "CT_INT64", "CT_SIZE") and \
                    lo is not None and hi is not None:
                assert_mentions(where, text, [str(lo)], "the minimum")
                assert_mentions(where, text, [str(hi)], "the maximum")
                checked += 1
            elif typ == "CT_DURATION" and lo is not None and hi is not None:
                assert_mentions(where, text, duration_forms(lo), "the minimum")
                assert_mentions(where, text, duration_forms(hi), "the maximum")
                checked += 1
            elif typ in ("CT_STRING", "CT_NAME") and hi not in (None, 0):
                assert_mentions(where, text, [str(hi)], "the longest value")
                checked += 1
    assert checked >= 15


def test_conf_defaults_are_documented():
    """Every default conf_defaults() sets as a literal, in the paragraph
    of the option that field belongs to."""
    c, tree = conf_tree()
    body = re.search(r"^conf_defaults\(struct conf \*c\)\n\{(.*?)^\}", c,
                     re.M | re.S).group(1)
    defaults = dict(re.findall(r"c->(\w+) = ([\w\"]+);", body))
    defaults.update({f: '"%s"' % v for f, v in
                     re.findall(r"DUP\((\w+), \"([^\"]*)\"\)", body)})
    s = page("senderwatch.conf.5")
    by_field = {}
    for path, rows in tree:
        documented = items(subsection(s, CONF_HEADINGS[path]))
        for name, typ, off, _lo, _hi, arg in rows:
            m = re.fullmatch(r"C\((\w+)\)", off)
            if m:
                by_field[m.group(1)] = ("%s.%s" % (path, name), typ, arg,
                                        plain(documented[name]))
    checked = 0
    for field, value in defaults.items():
        if field not in by_field:
            continue        # set for the code's sake, not an option's
        where, typ, arg, text = by_field[field]
        if value.startswith('"'):
            forms = [value.strip('"')]
        elif typ == "CT_DURATION":
            forms = duration_forms(int(value))
        elif typ == "CT_MODE":
            forms = [value]
        elif typ == "CT_ENUM":
            choices = re.search(r"%s\[\] = \{(.*?)\};" % re.escape(arg), c,
                                re.S).group(1)
            forms = [n for n, v in re.findall(r"\{\s*\"(\w+)\",\s*(\w+)\s*\}",
                                              choices) if v == value]
        elif re.fullmatch(r"\d+", value):
            forms = [value]
        else:
            continue
        assert_mentions(where, text, forms, "its default")
        assert has_token(text, "default"), "%s: no default named" % where
        checked += 1
    assert checked >= 20


def conf_examples():
    """The YAML blocks of senderwatch.conf(5)'s EXAMPLES."""
    ex = section(page("senderwatch.conf.5"), "EXAMPLES")
    blocks = re.findall(r"^\.Bd -literal[^\n]*\n(.*?)^\.Ed", ex, re.M | re.S)
    return [plain(b) for b in blocks if not re.match(r"\s*[#$]", b)]


def top_sections(text):
    """[(name, text)] of a YAML document's top-level sections."""
    return [(m.group(1), m.group(0)) for m in
            re.finditer(r"^(\w+):.*?(?=^\w+:|\Z)", text, re.M | re.S)]


def check_config(tmp, text):
    path = os.path.join(tmp, "config.yaml")
    with open(path, "w") as f:
        f.write(text)
    for prog in (SHIM, ALERTER):
        r = subprocess.run([prog, "-n", "-c", path], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, "%s -n:\n%s\n%s" % (prog, r.stderr, text)
        assert "configuration OK" in r.stdout


def test_conf_examples_are_valid():
    """The first example is a whole file; each section of the others
    replaces its namesake in it.  Files under /etc/senderwatch are made in
    a temporary directory."""
    blocks = conf_examples()
    assert len(blocks) >= 2
    tmp = tempfile.mkdtemp(prefix="sw-man-")
    try:
        def local(t):
            for p in set(re.findall(r"/etc/senderwatch/([\w.-]+)", t)):
                with open(os.path.join(tmp, p), "w") as f:
                    f.write("secret\n")
            return t.replace("/etc/senderwatch/", tmp + "/")
        base = top_sections(local(blocks[0]))
        check_config(tmp, "".join(t for _, t in base))
        n = 0
        for b in blocks[1:]:
            for name, text in top_sections(local(b)):
                doc = [(k, text if k == name else t) for k, t in base]
                if name not in dict(base):
                    doc.append((name, text))
                check_config(tmp, "".join(t.rstrip("\n") + "\n" for _, t in doc))
                n += 1
        assert n >= 3
    finally:
        shutil.rmtree(tmp)


# --- the daemons' pages against their options and counters -----------------

def daemon_letters(keys):
    """The option letters of common/daemon.c's getopt and usage strings,
    without -k for a daemon that offers no keys hook."""
    c = src("common", "daemon.c")
    getopt = re.search(r"getopt\(argc, argv, \"([^\"]+)\"\)", c).group(1)
    letters = set(getopt.replace(":", ""))
    usage = re.search(r"^daemon_usage\(.*?^\}", c, re.M | re.S).group(0)
    for m in re.finditer(r"\[-(\w+)", usage):
        letters.update(m.group(1))
    if not keys:
        letters.discard("k")
    assert {"c", "f", "n", "p", "v", "V", "h"} <= letters
    return letters


def offers_keys(main):
    return re.search(r"\.keys\s*=", src(*main)) is not None


@pytest.mark.parametrize("name,main", [
    ("senderwatch-shim.8", ("shim", "main.c")),
    ("senderwatch-alerter.8", ("alerter", "main.c")),
])
def test_daemon_options(name, main):
    keys = offers_keys(main)
    s = page(name)
    synopsis = section(s, "SYNOPSIS")
    listed = set(re.findall(r"^\.It Fl (\w)\b", section(s, "DESCRIPTION"),
                            re.M))
    for letter in daemon_letters(keys):
        assert letter in listed, "%s: no .It Fl %s" % (name, letter)
        assert letter in flags_in(synopsis), \
            "%s: -%s not in the SYNOPSIS" % (name, letter)
    if not keys:
        assert "k" not in listed and "k" not in flags_in(synopsis)
    if name == "senderwatch-shim.8":
        assert keys, "the shim offers -k"


def code_files(*dirs):
    out = []
    for d in dirs:
        out += sorted(glob.glob(os.path.join(ROOT, d, "*.c")))
    return out


def literal_names(files, pattern):
    names = set()
    for path in files:
        with open(path) as f:
            names.update(re.findall(pattern, f.read()))
    return names


METRIC = r"\"(senderwatch_[a-z0-9_]+)\""
KV_KEY = r"kv_(?:u64|str)\(kv,\s*\"(\w+)\""


@pytest.mark.parametrize("name,own", [
    ("senderwatch-shim.8", "shim"),
    ("senderwatch-alerter.8", "alerter"),
])
def test_daemon_metrics_and_keys(name, own):
    """Every metric, and every stats and status key, the daemon's code and
    the common daemon code write, named in its page."""
    files = code_files(own) + [os.path.join(ROOT, "common", "daemon.c")]
    s = page(name)
    metrics = literal_names(files, METRIC)
    assert len(metrics) >= 8, metrics
    for m in sorted(metrics):
        assert re.search(r"^\.It Li %s(\s|$)" % m, s, re.M), \
            "%s: metric %s not listed" % (name, m)
    keys = literal_names(files, KV_KEY)
    assert len(keys) >= 10, keys
    for k in sorted(keys):
        assert re.search(r"\bLi %s(?=[\s=]|$)" % k, s, re.M), \
            "%s: stats or status key %s not named" % (name, k)
    # No metric of the other daemon's.
    other = "alerter" if own == "shim" else "shim"
    for m in literal_names(code_files(other), METRIC) - metrics:
        assert not has_token(s, m), "%s names %s, the %s's" % (name, m,
                                                                other)


def test_shim_fail_reasons():
    c = src("shim", "session.c")
    body = re.search(r"fail_reason_names\[FAIL_MAX\] = \{(.*?)\};", c,
                     re.S).group(1)
    reasons = re.findall(r"\] = \"(\w+)\"", body)
    assert len(reasons) > 10
    s = page("senderwatch-shim.8")
    for r in reasons:
        if r != "none":
            assert re.search(r"^\.It Cm %s$" % r, s, re.M), r


def test_signals_documented():
    c = src("common", "daemon.c")
    sigs = re.search(r"signums\[\] = \{(.*?)\};", c, re.S).group(1)
    for name in ("senderwatch-shim.8", "senderwatch-alerter.8"):
        text = section(page(name), "SIGNALS")
        for sig in re.findall(r"SIG\w+", sigs):
            assert "Dv %s" % sig in text, "%s: %s" % (name, sig)


# --- senderwatch-ctl(8) ------------------------------------------------------

def ctl_table():
    """{command: usage} from common/ctl/ctl.c's table, when it is there."""
    path = os.path.join(ROOT, "common", "ctl", "ctl.c")
    if not os.path.exists(path):
        return {}
    c = src("common", "ctl", "ctl.c")
    return {m.group(1): re.sub(r"\"\s*\"", "", m.group(2)) for m in
            re.finditer(r"\{\s*\"(\w+)\",\s*ctl_cmd_\w+,\s*((?:\"[^\"]*\"\s*)+)\}",
                        c)}


def test_ctl_commands():
    s = page("senderwatch-ctl.8")
    desc = section(s, "DESCRIPTION")
    documented = {m.group(1): m.group(2) for m in
                  re.finditer(r"^\.It Cm (\w+)(.*)$", desc, re.M)}
    table = ctl_table()
    for cmd in sorted(set(CTL_COMMANDS) | set(table)):
        assert cmd in documented, "senderwatch-ctl.8 lacks %s" % cmd
        # Its options, as the tool's own usage gives them.
        for letter in re.findall(r"-(\w)\b", table.get(cmd, "")):
            assert letter in flags_in(documented[cmd]), \
                "senderwatch-ctl.8: %s -%s" % (cmd, letter)
    if table:
        assert set(table) == set(CTL_COMMANDS), \
            "the contract and common/ctl/ctl.c differ: %s" % (
                set(table) ^ set(CTL_COMMANDS))


def test_ctl_options():
    s = page("senderwatch-ctl.8")
    synopsis = section(s, "SYNOPSIS")
    listed = set(re.findall(r"^\.It Fl (\w)\b", section(s, "DESCRIPTION"),
                            re.M))
    letters = {"c", "j"}
    if os.path.exists(os.path.join(ROOT, "common", "ctl", "ctl.c")):
        m = re.search(r"getopt\(argc, argv, \"\+?([^\"]+)\"\)",
                      src("common", "ctl", "ctl.c"))
        letters |= set(m.group(1).replace(":", ""))
    for letter in letters:
        assert letter in listed, "senderwatch-ctl.8: no .It Fl %s" % letter
        assert letter in flags_in(synopsis), letter
    # The commands' own options, wherever their getopt strings are.
    found = set()
    for path in code_files(os.path.join("common", "ctl")):
        with open(path) as f:
            calls = re.findall(r"getopt\(\w+, \w+, (.*?)\)\) != -1", f.read(),
                               re.S)
        for call in calls:
            for opts in re.findall(r"\"\+?([^\"]*)\"", call):
                found.update(opts.replace(":", ""))
                for letter in opts.replace(":", ""):
                    assert letter in flags_in(s), \
                        "%s: -%s not in senderwatch-ctl.8" % (
                            os.path.basename(path), letter)
    if len(code_files(os.path.join("common", "ctl"))) > 1:
        assert {"r", "n"} <= found, "no command getopt parsed: %s" % found


def test_ctl_exit_status():
    text = render("senderwatch-ctl.8")
    part = text[text.index("EXIT STATUS"):text.index("EXAMPLES")]
    for n in ("0", "1", "2"):
        assert re.search(r"\b%s\b" % n, part), n


CLUSTER_CONF = """\
shim:
  listen: [ {sock} ]
redis:
  cluster: [ 127.0.0.1:7000 ]
events:
  channel: senderwatch:events
rules:
  default: {{ limit: 20, window: 5m }}
"""


def test_key_names_shown_are_the_shims(tmp_path):
    """The README's and senderwatch-shim(8)'s `senderwatch-shim -k`
    examples (a Redis Cluster's names, with the default 48 shards) are what
    the shim prints: an operator pastes them into redis-cli."""
    conf = tmp_path / "c.yaml"
    conf.write_text(CLUSTER_CONF.format(sock=tmp_path / "s.sock"))
    r = subprocess.run([SHIM, "-c", str(conf), "-k", "alice@example.org"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    readme = src("README.md")
    block = readme[readme.index("    $ senderwatch-shim -k alice@example.org\n"):]
    shown = [l[4:] for l in block.splitlines()[1:len(lines) + 1]]
    assert shown == lines, "README.md's -k example: %s" % shown
    man = page("senderwatch-shim.8")
    first = man.index("$ senderwatch-shim -k alice@example.org\n")
    assert man[first:].splitlines()[1] == lines[0]
    name = lines[0].split()[2]
    assert "GET '%s'" % name in man
    # Where the README names alice's shard without -k's output beside it.
    tag = name.split(":")[1]
    assert "XLEN senderwatch:stream:%s\n" % tag in readme
    assert "`senderwatch:%s:default:KEY`" % tag in readme
