"""KServe's own Python client against our endpoint, run in its own venv (kserve pins pandas < 3, protobuf < 7).

    python kserve_v2.py URL MODEL ROWS_JSON   → prints {"binary": [...], "json": [...], "ready": bool, "live": bool}

ROWS_JSON: {"feature": [values, ...], ...}; strings make BYTES tensors, numbers FP32. "binary" uses the client's
defaults (binary tensor data in the request, as `InferInput.set_data_from_numpy` does by default); "json" sets
`binary_data=False`.
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig


async def main(url: str, model: str, rows: dict) -> dict:
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=30))
    out: dict = {
        "live": await client.is_server_live(url),
        "ready": await client.is_model_ready(url, model),
    }
    for mode, binary in (("binary", True), ("json", False)):
        inputs = []
        for name, values in rows.items():
            if isinstance(values[0], str):
                tensor = InferInput(name, [len(values)], "BYTES")
                tensor.set_data_from_numpy(np.array([v.encode() for v in values], dtype=object), binary_data=binary)
            else:
                tensor = InferInput(name, [len(values)], "FP32")
                tensor.set_data_from_numpy(np.array(values, dtype=np.float32), binary_data=binary)
            inputs.append(tensor)
        result = await client.infer(url, InferRequest(model_name=model, infer_inputs=inputs), model_name=model)
        out[mode] = result.outputs[0].as_numpy().tolist()
    await client.close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))))
