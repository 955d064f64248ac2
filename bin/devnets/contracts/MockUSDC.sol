// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title MockUSDC: a USDC-like ERC-20 for devnets (SIMULATION only, not Circle's token)
/// @notice 6 decimals like USDC on Base, standard ERC-20 events and revert strings, and a
/// `mint` its owner (the deployer) calls to fund test and demo accounts. It has none of
/// real USDC's blocklist, pause or proxy machinery.
contract MockUSDC {
    /// @notice Token name, as USDC reports it.
    string public constant name = "USD Coin";
    /// @notice Token symbol.
    string public constant symbol = "USDC";
    /// @notice Base units per token: 6, as USDC.
    uint8 public constant decimals = 6;

    /// @notice The account allowed to mint (the deployer).
    address public immutable owner;
    /// @notice Sum of all balances.
    uint256 public totalSupply;
    /// @notice Balance of each account, in base units.
    mapping(address => uint256) public balanceOf;
    /// @notice `allowance[holder][spender]`: what `spender` may still move for `holder`.
    mapping(address => mapping(address => uint256)) public allowance;

    /// @notice Emitted on every balance move, mints included (`from` is zero then).
    event Transfer(address indexed from, address indexed to, uint256 value);
    /// @notice Emitted when a holder sets a spender's allowance.
    event Approval(address indexed owner, address indexed spender, uint256 value);

    constructor() {
        owner = msg.sender;
    }

    /// @notice Creates `amount` base units for `to`. Owner only.
    function mint(address to, uint256 amount) external {
        require(msg.sender == owner, "MockUSDC: caller is not the owner");
        require(to != address(0), "ERC20: mint to the zero address");
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    /// @notice Moves `amount` from the caller to `to`.
    function transfer(address to, uint256 amount) external returns (bool) {
        _transfer(msg.sender, to, amount);
        return true;
    }

    /// @notice Sets `spender`'s allowance over the caller's tokens to `amount`.
    function approve(address spender, uint256 amount) external returns (bool) {
        require(spender != address(0), "ERC20: approve to the zero address");
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    /// @notice Moves `amount` from `from` to `to` out of the caller's allowance
    /// (an allowance of type(uint256).max is never decreased, as OpenZeppelin's).
    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            require(allowed >= amount, "ERC20: insufficient allowance");
            allowance[from][msg.sender] = allowed - amount;
        }
        _transfer(from, to, amount);
        return true;
    }

    function _transfer(address from, address to, uint256 amount) private {
        require(to != address(0), "ERC20: transfer to the zero address");
        uint256 balance = balanceOf[from];
        require(balance >= amount, "ERC20: transfer amount exceeds balance");
        balanceOf[from] = balance - amount;
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
    }
}
