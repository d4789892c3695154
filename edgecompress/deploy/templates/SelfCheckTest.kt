// Instrumented test: the phone's LiteRT computes what edgecompress measured for this model.
//
// Copy into app/src/androidTest/java/<your package>/ and put model.tflite, model.tflite.json and the
// bundle's reference/ folder into app/src/androidTest/assets/. Needs, in app/build.gradle(.kts):
//   androidTestImplementation("androidx.test.ext:junit:1.2.1")
//   androidTestImplementation("androidx.test:runner:1.6.2")
//   implementation("com.google.ai.edge.litert:litert:1.4.1")
// Run: ./gradlew connectedAndroidTest
//
// It feeds reference/model_inputs.npy (the preprocessed float inputs, so the app's own preprocessing
// is not under test here) and compares with reference/outputs.npz using the rule in
// model.tflite.json ("deploy" -> "self_check"): identical for int8 models, a max |difference| for float.

import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import java.io.InputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.zip.ZipInputStream
import org.json.JSONObject
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.tensorflow.lite.Interpreter

@RunWith(AndroidJUnit4::class)
class SelfCheckTest {
    private val assets = InstrumentationRegistry.getInstrumentation().context.assets

    /** A little-endian float32 or (u)int8 .npy as floats, with its shape. */
    private fun readNpy(stream: InputStream): Pair<IntArray, FloatArray> {
        val bytes = stream.readBytes()
        val headerLength = (bytes[8].toInt() and 0xff) or ((bytes[9].toInt() and 0xff) shl 8)
        val header = String(bytes, 10, headerLength, Charsets.ISO_8859_1)
        val shape = Regex("""'shape': \(([^)]*)\)""").find(header)!!.groupValues[1]
            .split(",").map { it.trim() }.filter { it.isNotEmpty() }.map { it.toInt() }.toIntArray()
        val data = ByteBuffer.wrap(bytes, 10 + headerLength, bytes.size - 10 - headerLength).order(ByteOrder.LITTLE_ENDIAN)
        val count = shape.fold(1) { a, b -> a * b }
        val values = when {
            "'<f4'" in header -> FloatArray(count) { data.getFloat() }
            "'|u1'" in header -> FloatArray(count) { (data.get().toInt() and 0xff).toFloat() }
            else -> throw IllegalArgumentException("unsupported .npy dtype: $header")
        }
        return shape to values
    }

    private fun readNpz(name: String): Map<String, Pair<IntArray, FloatArray>> {
        val arrays = mutableMapOf<String, Pair<IntArray, FloatArray>>()
        ZipInputStream(assets.open(name)).use { zip ->
            while (true) {
                val entry = zip.nextEntry ?: break
                arrays[entry.name.removeSuffix(".npy")] = readNpy(zip)
            }
        }
        return arrays
    }

    @Test
    fun outputsMatchTheToolkit() {
        val deploy = JSONObject(assets.open("model.tflite.json").bufferedReader().readText()).getJSONObject("deploy")
        val rule = deploy.getJSONObject("self_check")
        val model = assets.open("model.tflite").readBytes()
        val modelBuffer = ByteBuffer.allocateDirect(model.size).order(ByteOrder.nativeOrder()).put(model).also { it.rewind() }
        val interpreter = Interpreter(modelBuffer)
        val (shape, inputs) = readNpy(assets.open("reference/model_inputs.npy"))
        val expected = readNpz("reference/outputs.npz")
        val input = interpreter.getInputTensor(0)
        val perSample = inputs.size / shape[0]
        var worst = 0f
        for (n in 0 until shape[0]) {
            val buffer = ByteBuffer.allocateDirect(input.numBytes()).order(ByteOrder.nativeOrder())
            val q = input.quantizationParams()
            for (i in 0 until perSample) {
                val x = inputs[n * perSample + i]
                when (input.dataType().toString()) {
                    "FLOAT32" -> buffer.putFloat(x)
                    "INT8" -> buffer.put(Math.round(x / q.scale + q.zeroPoint).coerceIn(-128, 127).toByte())
                    "UINT8" -> buffer.put(Math.round(x / q.scale + q.zeroPoint).coerceIn(0, 255).toByte())
                    else -> throw IllegalStateException("input type ${input.dataType()}")
                }
            }
            buffer.rewind()
            val outputs = HashMap<Int, Any>()
            val buffers = (0 until interpreter.outputTensorCount).map {
                ByteBuffer.allocateDirect(interpreter.getOutputTensor(it).numBytes()).order(ByteOrder.nativeOrder())
            }
            buffers.forEachIndexed { i, b -> outputs[i] = b }
            interpreter.runForMultipleInputsOutputs(arrayOf(buffer), outputs)
            // Outputs in the order model.tflite.json lists them (LiteRT may order them differently).
            val names = (0 until deploy.getJSONArray("outputs").length()).map {
                deploy.getJSONArray("outputs").getJSONObject(it).getString("name")
            }
            names.forEachIndexed { k, name ->
                val index = (0 until interpreter.outputTensorCount).first { interpreter.getOutputTensor(it).name() == name }
                val tensor = interpreter.getOutputTensor(index)
                val data = buffers[index].apply { rewind() }
                val (outShape, want) = expected.getValue("output_$k")
                val size = want.size / outShape[0]
                for (i in 0 until size) {
                    val got = when (tensor.dataType().toString()) {
                        "FLOAT32" -> data.getFloat()
                        "INT8" -> (data.get() - tensor.quantizationParams().zeroPoint) * tensor.quantizationParams().scale
                        "UINT8" -> ((data.get().toInt() and 0xff) - tensor.quantizationParams().zeroPoint) * tensor.quantizationParams().scale
                        else -> throw IllegalStateException("output type ${tensor.dataType()}")
                    }
                    worst = maxOf(worst, Math.abs(got - want[n * size + i]))
                }
            }
        }
        val allowed = rule.getDouble("max_abs_diff").toFloat()
        assertTrue("largest difference $worst, allowed $allowed (${rule.getString("rule")})", worst <= allowed)
    }
}
