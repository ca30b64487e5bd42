// Reference landmarks from face-api.js for parity tests.
// usage: node landmarks68.cjs MODEL_DIR MANIFEST_NAME INPUT.f32 BATCH OUTPUT.f32
// INPUT.f32: BATCH x 112 x 112 x 3 float32 RGB in 0..255; OUTPUT.f32: BATCH x 136 float32 (x, y in [0,1] of the crop).
const fs = require('node:fs');
const path = require('node:path');
const tf = require('@tensorflow/tfjs');
const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');

async function main() {
  const [modelDir, manifestName, inputPath, batchText, outputPath] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const manifest = JSON.parse(fs.readFileSync(path.join(modelDir, manifestName), 'utf8'));
  const weightSpecs = manifest.flatMap((group) => group.weights);
  const shards = manifest.flatMap((group) => group.paths).map((p) => fs.readFileSync(path.join(modelDir, p)));
  const buffer = Buffer.concat(shards);
  const weightMap = tf.io.decodeWeights(buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.length), weightSpecs);
  const net = manifestName.includes('tiny') ? new faceapi.FaceLandmark68TinyNet() : new faceapi.FaceLandmark68Net();
  net.loadFromWeightMap(weightMap);
  const batch = Number(batchText);
  const raw = fs.readFileSync(inputPath);
  const pixels = new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4);
  const input = tf.tensor4d(pixels, [batch, 112, 112, 3]);
  const output = net.forwardInput(await faceapi.toNetInput(tf.unstack(input)));
  fs.writeFileSync(outputPath, Buffer.from((await output.data()).buffer));
}

main().catch((error) => { console.error(error); process.exit(1); });
