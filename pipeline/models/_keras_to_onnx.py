"""Run by ``tracklens models pull`` inside the converter environment (TensorFlow + tf2onnx).

Usage: python _keras_to_onnx.py MODEL.hdf5 OUT.onnx HEIGHT WIDTH CHANNELS
Converts a Keras HDF5 classifier with a dynamic batch dimension. Imports nothing from tracklens.
"""

import sys

import tensorflow as tf
import tf2onnx

src, dst, height, width, channels = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
model = tf.keras.models.load_model(src, compile=False)
signature = (tf.TensorSpec((None, height, width, channels), tf.float32, name="x"),)
tf2onnx.convert.from_keras(model, input_signature=signature, opset=13, output_path=dst)
