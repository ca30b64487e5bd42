// Reference TinyFaceDetector outputs from face-api.js for parity tests.
// usage: node tinyface.cjs MODEL_DIR INPUT.f32 HEIGHT WIDTH RAW_OUT.f32 BOXES_OUT.json
// INPUT.f32: HEIGHT x WIDTH x 3 float32 RGB in 0..255 (one image); RAW_OUT.f32: the 13 x 13 x 25 output at
// input size 416; BOXES_OUT.json: locateFaces at its defaults, [[x, y, width, height, score], ...] in pixels.
const fs = require('node:fs');
const path = require('node:path');
const tf = require('@tensorflow/tfjs');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

async function main() {
  const [modelDir, inputPath, heightText, widthText, rawPath, boxesPath] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, 'tiny_face_detector_model-weights_manifest.json'), 'utf8'));
  const weightSpecs = manifest.flatMap((group) => group.weights);
  const buffer = Buffer.concat(manifest.flatMap((group) => group.paths).map((p) => fs.readFileSync(path.join(modelDir, p))));
  const weightMap = tf.io.decodeWeights(buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.length), weightSpecs);
  const net = new faceapi.TinyFaceDetector();
  net.loadFromWeightMap(weightMap);
  const raw = fs.readFileSync(inputPath);
  const image = tf.tensor3d(new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4), [Number(heightText), Number(widthText), 3]);
  const output = net.forwardInput(await faceapi.toNetInput(image), 416);
  fs.writeFileSync(rawPath, Buffer.from((await output.data()).buffer));
  const faces = await net.locateFaces(image, { inputSize: 416, scoreThreshold: 0.5 });
  fs.writeFileSync(boxesPath, JSON.stringify(faces.map((f) => [f.box.x, f.box.y, f.box.width, f.box.height, f.score])));
}

main().catch((error) => { console.error(error); process.exit(1); });
