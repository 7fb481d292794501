"""The hello-world anchor: the smallest Flask app, served by the same gunicorn settings as the services."""

from flask import Flask

app = Flask(__name__)


@app.get("/hello")
def hello():
    return {"hello": "world"}
