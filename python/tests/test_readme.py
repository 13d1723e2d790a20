"""The README's interactive Python session runs as written (doctest)."""
import doctest
import os
import re

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                      "README.md")


def test_readme_python_session():
    text = open(README).read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no ```python block"
    session = "\n".join(b for b in blocks if ">>>" in b)
    test = doctest.DocTestParser().get_doctest(session, {}, "README", README, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    res = runner.summarize(verbose=False)
    assert res.attempted > 10 and res.failed == 0
