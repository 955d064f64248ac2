// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @notice The part of ERC-20 the devnet contracts call.
interface IERC20Transfers {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title SkipBridge: the swap entry point of the devnet route SIMULATOR (not Skip's contracts)
/// @notice The EVM transaction `morpheus devnet skip` returns from `/v2/fungible/msgs`
/// calls `swap`: the bridge takes the USDC and records a request. The route simulator
/// (the bridge's owner) watches `SwapRequested`, delivers AKT on the Akash devnet
/// simulator and then calls `settle`, or, when the swap cannot honour `minAmountOut`,
/// calls `refund`, which returns the USDC. Each request ends exactly once, settled or
/// refunded, and that end is on chain (`swaps(id).status`), so a restarted simulator
/// knows which requests it has already finished.
contract SkipBridge {
    /// @notice Where a request stands. Pending until the owner settles or refunds it.
    enum Status { None, Pending, Settled, Refunded }

    /// @notice One swap request.
    struct Swap {
        address sender;
        uint256 amountIn;
        string destAddress;
        uint256 minAmountOut;
        Status status;
        uint256 amountOut;
    }

    /// @notice The input token (USDC).
    IERC20Transfers public immutable token;
    /// @notice The route simulator's account: the only one that settles or refunds.
    address public immutable owner;
    /// @notice Requests so far; ids run from 1.
    uint256 public swapCount;
    /// @notice Every request by id.
    mapping(uint256 => Swap) public swaps;

    /// @notice A request was made: `amountIn` USDC taken from `sender`, to be swapped and
    /// delivered to `destAddress` (an akash1… address) if it yields at least `minAmountOut`.
    event SwapRequested(
        uint256 indexed id, address indexed sender, uint256 amountIn, string destAddress, uint256 minAmountOut
    );
    /// @notice The request was delivered: `amountOut` (destination base units, uakt) credited.
    event SwapSettled(uint256 indexed id, uint256 amountOut);
    /// @notice The request was abandoned and its USDC returned to its sender.
    event SwapRefunded(uint256 indexed id, address indexed sender, uint256 amountIn, string reason);

    constructor(IERC20Transfers inputToken) {
        token = inputToken;
        owner = msg.sender;
    }

    modifier onlyOwner() {
        require(msg.sender == owner, "caller is not the owner");
        _;
    }

    /// @notice Takes `amountIn` of the token from the caller (who must have approved this
    /// bridge) and records a swap request to `destAddress`. Returns its id.
    function swap(uint256 amountIn, string calldata destAddress, uint256 minAmountOut) external returns (uint256 id) {
        require(amountIn > 0, "swap amount is zero");
        require(bytes(destAddress).length > 0, "destination address is empty");
        require(token.transferFrom(msg.sender, address(this), amountIn), "token transfer failed");
        id = ++swapCount;
        swaps[id] = Swap(msg.sender, amountIn, destAddress, minAmountOut, Status.Pending, 0);
        emit SwapRequested(id, msg.sender, amountIn, destAddress, minAmountOut);
    }

    /// @notice Marks request `id` delivered with `amountOut`. Owner only, once.
    function settle(uint256 id, uint256 amountOut) external onlyOwner {
        Swap storage request = swaps[id];
        require(request.status == Status.Pending, "swap is not pending");
        require(amountOut >= request.minAmountOut, "amount out below minimum");
        request.status = Status.Settled;
        request.amountOut = amountOut;
        emit SwapSettled(id, amountOut);
    }

    /// @notice Abandons request `id` and returns its USDC to its sender. Owner only, once.
    function refund(uint256 id, string calldata reason) external onlyOwner {
        Swap storage request = swaps[id];
        require(request.status == Status.Pending, "swap is not pending");
        request.status = Status.Refunded;
        require(token.transfer(request.sender, request.amountIn), "token transfer failed");
        emit SwapRefunded(id, request.sender, request.amountIn, reason);
    }
}
