"""pycaffe Python layers for the engine tests: top = factor * bottom (factor from param_str),
a failing one, a sink, and layers that do what pycaffe refuses."""
import ast

from solvers.engine.pylayer import Layer


class Multiply(Layer):
    def setup(self, bottom, top):
        self.factor = float(ast.literal_eval(self.param_str or "1"))

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.factor * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = self.factor * top[0].diff


class Broken(Layer):
    def setup(self, bottom, top):
        raise ValueError("no such thing")


class Record(Layer):
    """No tops: remembers the sum of what it saw (a sink, like a logging layer)."""
    seen: list = []

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        Record.seen.append(float(bottom[0].data.sum()))
