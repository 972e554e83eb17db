// Calls to the kserve-mesh server extension (<base_url>/kserve-mesh/...). The browser never talks to
// the mesh itself: Jupyter's server proxies, with the mesh's URL and credentials from its config.
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IModelStatus {
  modelId: string;
  status: string;
  errors?: string[];
  sizeBytes?: number;
  copies?: number;
  lastUsedTime?: number;
  modelInfo?: { type?: string; path?: string };
  [key: string]: unknown;
}

export interface IVModel {
  vModelId: string;
  activeModelId?: string;
  targetModelId?: string;
  status?: string;
  [key: string]: unknown;
}

export interface IOverview {
  url: string;
  models: IModelStatus[];
  vmodels: IVModel[];
  status: { capacityBytes?: number; usedBytes?: number; modelsLoaded?: number; [key: string]: unknown };
  time: number;
}

export interface ITensor {
  name: string;
  datatype?: string;
  shape?: number[];
  data?: unknown[];
}

export interface IInferResult {
  model: string;
  latencyMs: number;
  response: { outputs?: ITensor[]; [key: string]: unknown };
}

export interface IDeployResult {
  modelId: string;
  type: string;
  path: string;
  status: IModelStatus;
}

/** An error answered by the server extension: the mesh's message in full. */
export class MeshError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly kind: string = ''
  ) {
    super(message);
  }
}

export async function requestAPI<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'kserve-mesh', path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new MeshError(`cannot reach the Jupyter server: ${error}`, 0, 'NetworkError');
  }
  const text = await response.text();
  let body: any = null;
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }
  if (!response.ok) {
    const message =
      (body && (body.error || body.message)) || text || `HTTP ${response.status} ${response.statusText}`;
    throw new MeshError(String(message), response.status, (body && body.type) || '');
  }
  return body as T;
}

export function postJSON<T>(path: string, body: unknown, method = 'POST'): Promise<T> {
  return requestAPI<T>(path, { method, body: JSON.stringify(body) });
}

export const MODEL_TYPES = [
  'sklearn', 'xgboost', 'lightgbm', 'onnx', 'pytorch', 'tensorflow', 'keras', 'openvino_ir', 'python', 'string'
];

/** Extensions "Deploy to mesh" is offered for, and the type each stands for. */
export const MODEL_EXTENSIONS: { [ext: string]: string } = {
  '.joblib': 'sklearn',
  '.pkl': 'sklearn',
  '.pickle': 'sklearn',
  '.json': 'xgboost',
  '.ubj': 'xgboost',
  '.txt': 'lightgbm',
  '.onnx': 'onnx',
  '.pt': 'pytorch',
  '.pth': 'pytorch',
  '.torchscript': 'pytorch',
  '.keras': 'keras',
  '.h5': 'keras',
  '.xml': 'openvino_ir',
  '.string': 'string',
  '.str': 'string'
};

export function extensionOf(path: string): string {
  const name = path.split('/').pop() || '';
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(dot).toLowerCase() : '';
}

export function humanBytes(n: number | undefined, zero = '-'): string {
  if (!n || n <= 0) {
    return zero;
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let size = n;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} B` : `${size.toFixed(1)} ${units[unit]}`;
}

export function ago(epochMs: number | undefined, nowMs: number = Date.now()): string {
  if (!epochMs || epochMs <= 0) {
    return 'never';
  }
  const s = (nowMs - epochMs) / 1000;
  if (s < 1) {
    return 'just now';
  }
  for (const [unit, size] of [
    ['d', 86400],
    ['h', 3600],
    ['min', 60]
  ] as [string, number][]) {
    if (s >= size) {
      return `${Math.round(s / size)} ${unit} ago`;
    }
  }
  return `${Math.round(s)} s ago`;
}

/** A small DOM helper: an element with a class, text and attributes. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = '',
  text = '',
  attrs: { [name: string]: string } = {}
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text) {
    node.textContent = text;
  }
  for (const [name, value] of Object.entries(attrs)) {
    node.setAttribute(name, value);
  }
  return node;
}
