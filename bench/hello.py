"""The bare Flask hello-world the benchmarks compare against (the framework's ceiling)."""

from flask import Flask

app = Flask("hello")


@app.get("/")
def hello() -> str:
    return "Hello"
